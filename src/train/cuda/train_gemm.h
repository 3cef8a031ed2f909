#pragma once
// The draft-head trainer's GEMMs: bf16 operands, fp32 accumulation and fp32 output, with the transposes and the
// beta = 1 accumulation a backward pass needs (backend/cuda/gemm.h is forward-only, x · Wᵀ into a fresh output).
// cuBLASLt where it has an algorithm for the shape and the pointers' alignment; otherwise a plain CUDA-core kernel
// with the same contract (the tiny heads of the tests have leading dimensions of 3 or 13 elements).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "backend/cuda/device.h"

namespace qed::train::gpu {

class TrainGemm {
 public:
  explicit TrainGemm(size_t workspace_bytes = size_t(32) << 20);
  ~TrainGemm();
  TrainGemm(const TrainGemm&) = delete;
  TrainGemm& operator=(const TrainGemm&) = delete;

  // Row-major C[M×N] = op(A) · op(B) + beta · C. A is stored M×K, or K×M when trans_a; B is stored K×N, or N×K
  // when trans_b. A, B bf16 (uint16_t bits); C fp32. beta 0 or 1.
  void run(bool trans_a, bool trans_b, int m, int n, int k, const uint16_t* a, const uint16_t* b, float* c, float beta,
           cudaStream_t stream);

  // The three products of y = x Wᵀ, W [out, in] (nn.Linear): y = x Wᵀ (+ beta y); dx = dy W (+ beta dx);
  // dW += dyᵀ x.
  void forward(const uint16_t* x, const uint16_t* w, float* y, int rows, int in, int out, float beta,
               cudaStream_t stream) {
    run(false, true, rows, out, in, x, w, y, beta, stream);
  }
  void input_grad(const uint16_t* dy, const uint16_t* w, float* dx, int rows, int in, int out, float beta,
                  cudaStream_t stream) {
    run(false, false, rows, in, out, dy, w, dx, beta, stream);
  }
  void weight_grad(const uint16_t* dy, const uint16_t* x, float* dw, int rows, int in, int out, cudaStream_t stream) {
    run(true, false, out, in, rows, dy, x, dw, 1.0f, stream);
  }

  // Tests: every product on the CUDA-core kernel, to check it against cuBLASLt.
  void set_force_fallback(bool force) { force_fallback_ = force; }

 private:
  struct Plan {
    bool cublaslt = false;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // (trans_a, trans_b, m, n, k, alignment of a, b, c in bytes)
  using Key = std::tuple<bool, bool, int, int, int, int, int, int>;
  Plan& plan_for(const Key& key);

  cublasLtHandle_t handle_ = nullptr;
  cuda::DeviceBuffer workspace_;
  std::map<Key, Plan> plans_;
  bool force_fallback_ = false;
};

// The CUDA-core kernel behind TrainGemm's fallback, same contract as TrainGemm::run.
void gemm_bf16_f32_simple(bool trans_a, bool trans_b, int m, int n, int k, const uint16_t* a, const uint16_t* b,
                          float* c, float beta, cudaStream_t stream);

}  // namespace qed::train::gpu
