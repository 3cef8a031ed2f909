#pragma once
// Every GEMM of the model: y[rows][out] = x[rows][in] · W[out][in]^T (+ bias[out]), the
// nn.Linear layout, fp32 accumulation. bf16 × bf16, or FP8 E4M3 × E4M3 with per-tensor dequantisation scales
// (cuBLASLt's A/B scale pointers): the weight is the transposed operand, K-major ("TN"), which is the only layout
// cuBLASLt's FP8 kernels take, and it is this one. Decode-sized row counts run the kernel decode_gemm_plan.h names
// for the shape (measured: decode_gemv, the skinny tensor-core kernel, or cuBLASLt). The draft-head trainer's
// products (transposed operands, fp32 output, beta = 1 accumulation) go through run_product on the same cuBLASLt
// handle, workspace and plan cache.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>

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
  // On the current device; the backend passes the caps it has read (device_caps).
  explicit Gemm(size_t workspace_bytes = size_t(32) << 20);
  explicit Gemm(const DeviceCaps& caps, size_t workspace_bytes = size_t(32) << 20);
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
  // gate_up (o.out = 2 · inter) with SiLU-and-mul fused into the plan's decode_gemv (DecodeGemv::silu_mul): y =
  // silu(gate) · up, rows × inter bf16, y_fp8 (optional) its E4M3 codes / *y_fp8_scale. Whether it can:
  // run_decode_silu_supported (the plan runs decode_gemv with a pairing variant, aligned operands, not switched off
  // by QED_FUSED_SILU=0), else run_decode_silu throws.
  bool run_decode_silu_supported(const DecodeGemmOperands& o) const;
  void run_decode_silu(const DecodeGemmOperands& o, uint8_t* y_fp8, const float* y_fp8_scale, cudaStream_t stream);
  // Whether the device has FP8 tensor cores (sm_89+), which the skinny FP8 kernel needs.
  bool has_fp8_mma() const { return fp8_mma_; }

  // Row-major C[m×n] = op(A) · op(B) + beta · C (beta 0 or 1): bf16 A and B (uint16_t bits), fp32 C, fp32
  // accumulation; A stored m×k (k×m when trans_a), B stored k×n (n×k when trans_b), densely. Any alignment: the
  // pointers' alignment is part of the cached plan, and a shape cuBLASLt has no algorithm for runs on a CUDA-core
  // kernel with the same contract (gemm_fallback.h).
  void run_product(bool trans_a, bool trans_b, int m, int n, int k, const uint16_t* a, const uint16_t* b, float* c,
                   float beta, cudaStream_t stream);
  // The three products of y = x Wᵀ, W [out, in] (nn.Linear; train/linear_grad.h on the CPU): y = x Wᵀ (+ beta y);
  // dx = dy W (+ beta dx); dW += dyᵀ x.
  void linear_forward(const uint16_t* x, const uint16_t* w, float* y, int rows, int in, int out, float beta,
                      cudaStream_t stream) {
    run_product(false, true, rows, out, in, x, w, y, beta, stream);
  }
  void linear_input_grad(const uint16_t* dy, const uint16_t* w, float* dx, int rows, int in, int out, float beta,
                         cudaStream_t stream) {
    run_product(false, false, rows, in, out, dy, w, dx, beta, stream);
  }
  void linear_weight_grad(const uint16_t* dy, const uint16_t* x, float* dw, int rows, int in, int out,
                          cudaStream_t stream) {
    run_product(true, false, out, in, rows, dy, x, dw, 1.0f, stream);
  }
  // Tests: every run_product on the CUDA-core kernel, to check it against cuBLASLt.
  void set_force_product_fallback(bool force) { force_product_fallback_ = force; }

 private:
  // A cuBLASLt plan: row-major C[m×n] = op(A) · op(B) (+ bias), A stored m×k (k×m when trans_a), B k×n (n×k when
  // trans_b), with the minimum pointer alignments the heuristic was told (0: its default, what run() asks).
  struct PlanKey {
    bool trans_a = false, trans_b = false;
    int m = 0, n = 0, k = 0;
    GemmType a = GemmType::BF16, b = GemmType::BF16, c = GemmType::BF16;
    bool bias = false;
    int align_a = 0, align_b = 0, align_c = 0;
    auto operator<=>(const PlanKey&) const = default;
  };
  struct Plan {
    bool found = false;  // the heuristic had an algorithm
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  Plan& plan_for(const PlanKey& key);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  DeviceBuffer one_;              // a device 1.0f: the scale of an FP8 operand given none
  DeviceBuffer skinny_counters_;  // split-K arrival counters of skinny_gemm, zero between launches
  bool fp8_mma_ = false;
  int multiprocessors_ = 0;
  bool force_product_fallback_ = false;
  std::map<PlanKey, Plan> plans_;
};

}  // namespace qed::cuda
