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
  // ready_fp8: the kernel that produced x already wrote its E4M3 codes there (fp8_input() or silu_fp8_output())
  // with static_fp8_scale(linear) (fused quantization), so the FP8 path skips its own quantization pass.
  void run(const CudaLinear& linear, const uint16_t* x, uint16_t* y, int rows, cudaStream_t stream,
           const uint8_t* ready_fp8 = nullptr);
  // gate_up (out = 2 · inter) then SiLU-and-mul in one decode GEMV, where Gemm::run_decode_silu_supported says
  // the plan allows it: act (rows × inter bf16) = silu(gate) · up as silu_and_mul_bf16 computes it, and with
  // act_fp8_scale (a static-scale FP8 down_proj's) also act's E4M3 codes, to silu_fp8_output(): the GEMV is still
  // reading fp8_input(). false: nothing ran; the caller runs run() and silu_and_mul_bf16.
  bool run_gate_up_silu(const CudaLinear& gate_up, const uint16_t* x, uint16_t* act, int rows, cudaStream_t stream,
                        const uint8_t* ready_fp8, const float* act_fp8_scale);

  // The static activation scale of an FP8 layer (device pointer), which lets the producer of its input quantize
  // it; null for every other layer (bf16, int8, dynamic FP8).
  static const float* static_fp8_scale(const CudaLinear& linear);
  // Where a fused producer writes the E4M3 input of the next FP8 layer (max_rows × its in_features bytes).
  uint8_t* fp8_input() const { return x_q_.as<uint8_t>(); }
  // Where run_gate_up_silu writes the E4M3 codes of its output (decode rows × the widest FP8 input).
  uint8_t* silu_fp8_output() const { return silu_fp8_.as<uint8_t>(); }

  size_t scratch_bytes() const {
    return x_q_.bytes() + silu_fp8_.bytes() + scale_.bytes() + acc_.bytes() + dequant_.bytes();
  }
  // Rows of one chunk of the fp32-scratch GEMMs.
  int chunk_rows() const { return chunk_rows_; }

 private:
  Gemm& gemm_;
  int max_rows_ = 0;
  int chunk_rows_ = 0;
  // The operands of a decode kernel for `linear` (x bf16, or the E4M3 codes x_q with x_scale for FP8).
  DecodeGemmOperands decode_operands(const CudaLinear& linear, const void* x, const float* x_scale, uint16_t* y,
                                     int rows) const;

  DeviceBuffer x_q_;       // E4M3 activations, max_rows × widest FP8 input
  DeviceBuffer silu_fp8_;  // E4M3 output of run_gate_up_silu, kDecodeGemvMaxRows × widest FP8 input
  DeviceBuffer scale_;     // the dynamic activation scale of the current FP8 GEMM
  DeviceBuffer acc_;       // fp32, chunk_rows × widest per-channel / int8 output
  DeviceBuffer dequant_;   // bf16 copy of the largest int8 weight
};

}  // namespace qed::cuda
