#pragma once
// The CUDA-core kernel behind Gemm::run_product where cuBLASLt has no algorithm for a shape and its pointers'
// alignment (the trainer tests' tiny heads, leading dimensions of 3 or 11 elements); same contract as run_product.
#include <cuda_runtime.h>

#include <cstdint>

namespace qed::cuda {

// Row-major C[m×n] = op(A) · op(B) + beta · C; A stored m×k (k×m when trans_a), B k×n (n×k when trans_b); bf16 A
// and B (uint16_t bits), fp32 C, fp32 accumulation in k order.
void gemm_bf16_f32_fallback(bool trans_a, bool trans_b, int m, int n, int k, const uint16_t* a, const uint16_t* b,
                            float* c, float beta, cudaStream_t stream);

}  // namespace qed::cuda
