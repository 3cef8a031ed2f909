#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm_fallback.h"

namespace qed::cuda {
namespace {

constexpr int kGemmTile = 16;

__device__ __forceinline__ float from_bf16(uint16_t bits) {
  return __bfloat162float(__ushort_as_bfloat16(bits));
}

// One thread per output element, fp32 accumulation in k order. Speed is irrelevant for the shapes it runs.
__global__ void gemm_fallback_kernel(bool trans_a, bool trans_b, int m, int n, int k, const uint16_t* a,
                                     const uint16_t* b, float* c, float beta) {
  const int row = int(blockIdx.y) * kGemmTile + int(threadIdx.y);
  const int col = int(blockIdx.x) * kGemmTile + int(threadIdx.x);
  if (row >= m || col >= n) return;
  float sum = 0.0f;
  for (int p = 0; p < k; ++p) {
    const float x =
        from_bf16(trans_a ? a[size_t(p) * size_t(m) + size_t(row)] : a[size_t(row) * size_t(k) + size_t(p)]);
    const float y =
        from_bf16(trans_b ? b[size_t(col) * size_t(k) + size_t(p)] : b[size_t(p) * size_t(n) + size_t(col)]);
    sum += x * y;
  }
  float* out = c + size_t(row) * size_t(n) + size_t(col);
  *out = beta != 0.0f ? sum + beta * *out : sum;
}

}  // namespace

void gemm_bf16_f32_fallback(bool trans_a, bool trans_b, int m, int n, int k, const uint16_t* a, const uint16_t* b,
                            float* c, float beta, cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  const dim3 block(kGemmTile, kGemmTile);
  const dim3 grid(unsigned((n + kGemmTile - 1) / kGemmTile), unsigned((m + kGemmTile - 1) / kGemmTile));
  gemm_fallback_kernel<<<grid, block, 0, stream>>>(trans_a, trans_b, m, n, k, a, b, c, beta);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace qed::cuda
