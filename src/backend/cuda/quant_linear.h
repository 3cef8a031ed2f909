#pragma once
// Runs the model's linear layers (CudaLinear) in whatever format the checkpoint gave them:
//   bf16             Gemm::run: for decode rows the kernel decode_gemm_plan.h names (decode_gemv, the older
//                    CUDA-core GEMV, the skinny tensor-core kernel or cuBLASLt), else one cuBLASLt GEMM (bias in its
//                    epilogue)
//   FP8              activations quantized to E4M3 (static input_scale, or a dynamic one from the input's amax); then
//                    the decode kernel decode_gemm_plan.h names (decode_gemv or the skinny E4M3 kernel, either scale
//                    kind in its epilogue), else per tensor one cuBLASLt FP8 GEMM with both scales as its A/B scale
//                    pointers (bias epilogue), per channel the same GEMM unscaled into fp32 scratch, then the scale
//                    epilogue
//   int8 weight-only rows ≤ kSkinnyInt8Rows: the fused kernel decode_gemm_plan.h names (decode_gemv at 1..4 rows,
//                    the skinny kernel above: int8 → bf16/fp32 in registers, the weight read once); more rows: the
//                    weight dequantized to bf16 scratch (exact: int8 codes are bf16 integers), a bf16 cuBLASLt GEMM
//                    into fp32 scratch, then the per-channel scale epilogue
// The fp32 scratch covers a bounded number of rows; larger batches run those GEMMs in row chunks.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/cuda/cuda_weights.h"
#include "backend/cuda/device.h"
#include "backend/cuda/gemm.h"

namespace qed::cuda {

class LinearRunner {
 public:
  // Scratch sized for forwards of up to max_rows rows over the layers of `weights`; none for a bf16 model.
  LinearRunner(Gemm& gemm, const CudaModelWeights& weights, int max_rows);
  // The same for an explicit set of layers (tests).
  LinearRunner(Gemm& gemm, const std::vector<const CudaLinear*>& linears, int max_rows);

  // y (rows × linear.out bf16) = x (rows × linear.in bf16) · W^T (+ bias), on `stream`. 16-byte aligned pointers.
  // fp8_input_ready: the kernel that produced x already wrote its E4M3 codes to fp8_input() with
  // static_fp8_scale(linear) (fused quantization), so the FP8 path skips its own quantization pass.
  void run(const CudaLinear& linear, const uint16_t* x, uint16_t* y, int rows, cudaStream_t stream,
           bool fp8_input_ready = false);

  // The static activation scale of an FP8 layer (device pointer), which lets the producer of its input quantize
  // it; null for every other layer (bf16, int8, dynamic FP8).
  static const float* static_fp8_scale(const CudaLinear& linear);
  // Where a fused producer writes the E4M3 input of the next FP8 layer (max_rows × its in_features bytes).
  uint8_t* fp8_input() const { return x_q_.as<uint8_t>(); }

  size_t scratch_bytes() const { return x_q_.bytes() + scale_.bytes() + acc_.bytes() + dequant_.bytes(); }
  // Rows of one chunk of the fp32-scratch GEMMs.
  int chunk_rows() const { return chunk_rows_; }

 private:
  Gemm& gemm_;
  int max_rows_ = 0;
  int chunk_rows_ = 0;
  DeviceBuffer x_q_;      // E4M3 activations, max_rows × widest FP8 input
  DeviceBuffer scale_;    // the dynamic activation scale of the current FP8 GEMM
  DeviceBuffer acc_;      // fp32, chunk_rows × widest per-channel / int8 output
  DeviceBuffer dequant_;  // bf16 copy of the largest int8 weight
};

}  // namespace qed::cuda
