#pragma once
// Every GEMM of the model goes through cuBLASLt: y[rows][out] = x[rows][in] · W[out][in]^T (+ bias[out]), the
// nn.Linear layout, fp32 accumulation. bf16 weights and activations today; the element types and the per-tensor
// scales are part of the interface so fp8 (E4M3, cuBLASLt's "TN" layout, which is this one) slots in next.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "backend/cuda/device.h"

namespace qed::cuda {

enum class GemmType : uint8_t { BF16, F32, F8_E4M3 };

struct GemmWeight {
  const void* data = nullptr;  // out_features × in_features, row-major
  GemmType type = GemmType::BF16;
  int out_features = 0;
  int in_features = 0;
  const float* scale = nullptr;  // device, per-tensor dequantisation scale (fp8 only)
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
  void run(const void* x, GemmType x_type, const GemmWeight& w, const void* bias, void* y, GemmType y_type, int rows,
           cudaStream_t stream);

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
  std::map<Key, Plan> plans_;
};

}  // namespace qed::cuda
