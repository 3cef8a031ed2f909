#pragma once
// Every GEMM of the model: y[rows][out] = x[rows][in] · W[out][in]^T (+ bias[out]), the
// nn.Linear layout, fp32 accumulation. bf16 × bf16, or FP8 E4M3 × E4M3 with per-tensor dequantisation scales
// (cuBLASLt's A/B scale pointers): the weight is the transposed operand, K-major ("TN"), which is the only layout
// cuBLASLt's FP8 kernels take, and it is this one. Decode-sized row counts run the kernel decode_gemm_plan.h names
// for the shape (measured: decode_gemv, the skinny tensor-core kernel, or cuBLASLt).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "backend/cuda/decode_gemm_plan.h"
#include "backend/cuda/device.h"
#include "backend/cuda/gemv_kernels.h"

namespace qed::cuda {

enum class GemmType : uint8_t { BF16, F32, F8_E4M3 };

struct GemmWeight {
  const void* data = nullptr;  // out_features × in_features, row-major
  GemmType type = GemmType::BF16;
  int out_features = 0;
  int in_features = 0;
  const float* scale = nullptr;  // device, per-tensor dequantisation scale (fp8 only; null = 1)
};

class Gemm {
 public:
  explicit Gemm(size_t workspace_bytes = size_t(32) << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // x: rows × w.in_features of x_type; bias: w.out_features bf16 or null; y: rows × w.out_features of y_type
  // (BF16, or F32 for logits). Plans (layouts + the heuristic's algorithm) are cached per shape, so a repeated
  // shape costs no host allocation and no heuristic query. All pointers 16-byte aligned.
  // FP8: x_type and w.type both F8_E4M3, y = (x_q · W_q^T) · *x_scale · *w.scale (+ bias, bf16 output only);
  // in_features and out_features multiples of 16 (cuBLASLt's FP8 leading-dimension rule); sm_89 or newer.
  void run(const void* x, GemmType x_type, const GemmWeight& w, const void* bias, void* y, GemmType y_type, int rows,
           cudaStream_t stream, const float* x_scale = nullptr);
  // The same on cuBLASLt for any row count (what run() does above the skinny kernels' rows): benchmarks and tests
  // compare the two.
  void run_cublaslt(const void* x, GemmType x_type, const GemmWeight& w, const void* bias, void* y, GemmType y_type,
                    int rows, cudaStream_t stream, const float* x_scale = nullptr);
  // skinny_gemm (gemv_kernels.h) with this Gemm's workspace and split-K counters filled in (and the SM count for
  // its default split), on `stream`: the skinny launches of run(), LinearRunner and the benchmark.
  void run_skinny(SkinnyGemm g, cudaStream_t stream);
  // A decode GEMM on the kernel decode_gemm_plan() names for it (decode_gemv with programmatic dependent launch,
  // or the skinny kernel): true when one ran, false when the plan says cuBLASLt or the kernel
  // cannot take the operands (unaligned pointers, an FP8 skinny kernel below sm_89), which the caller then runs on
  // cuBLASLt. Int8 operands of up to kSkinnyInt8Rows rows always run here (their cuBLASLt path dequantizes into
  // scratch that only larger batches have); a shape no int8 kernel takes throws.
  bool run_decode(const DecodeGemmOperands& o, cudaStream_t stream);
  // Whether the device has FP8 tensor cores (sm_89+), which the skinny FP8 kernel needs.
  bool has_fp8_mma() const { return fp8_mma_; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  using Key = std::tuple<int, int, int, GemmType, GemmType, GemmType, bool>;
  Plan& plan_for(const Key& key);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  DeviceBuffer one_;              // a device 1.0f: the scale of an FP8 operand given none
  DeviceBuffer skinny_counters_;  // split-K arrival counters of skinny_gemm, zero between launches
  bool fp8_mma_ = false;
  int multiprocessors_ = 0;
  std::map<Key, Plan> plans_;
};

}  // namespace qed::cuda
