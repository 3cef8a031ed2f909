#include <algorithm>

#include "backend/cuda/amax_kernels.h"
#include "backend/cuda/cuda_check.h"

namespace qed::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

__global__ void amax_bf16_kernel(const uint16_t* x, int rows, int cols, int row_stride, uint32_t* slot) {
  // bf16 magnitude bits (sign cleared) order like the values; shifting them up gives the fp32 bits of |x| exactly.
  uint32_t best = 0;
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const uint16_t* row = x + size_t(r) * size_t(row_stride);
    for (int c = threadIdx.x; c < cols; c += kThreads) best = max(best, uint32_t(row[c] & 0x7FFFu));
  }
  best = __reduce_max_sync(0xFFFFFFFFu, best);
  __shared__ uint32_t warp_best[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_best[warp] = best;
  __syncthreads();
  if (warp == 0) {
    best = lane < kThreads / 32 ? warp_best[lane] : 0u;
    best = __reduce_max_sync(0xFFFFFFFFu, best);
    if (lane == 0 && best > 0) atomicMax(slot, best << 16);
  }
}

}  // namespace

void accumulate_amax_bf16(const uint16_t* x, int rows, int cols, int row_stride, uint32_t* slot, cudaStream_t stream) {
  QED_KERNEL_REQUIRE(rows >= 0 && cols >= 0 && row_stride >= cols, "accumulate_amax_bf16: bad shape");
  if (rows == 0 || cols == 0) return;
  const int blocks = std::min(rows, kMaxBlocks);
  amax_bf16_kernel<<<blocks, kThreads, 0, stream>>>(x, rows, cols, row_stride, slot);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace qed::cuda
