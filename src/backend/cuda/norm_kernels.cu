#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fp8_convert.cuh"
#include "backend/cuda/norm_kernels.h"

namespace qed::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float block_sum(float value) {
  __shared__ float warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffff, value, offset);
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  value = lane < kThreads / 32 ? warp_sums[lane] : 0.0f;
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffff, value, offset);
    if (lane == 0) warp_sums[0] = value;
  }
  __syncthreads();
  float total = warp_sums[0];
  __syncthreads();
  return total;
}

__global__ void rmsnorm_kernel(const __nv_bfloat16* x, __nv_bfloat16* residual, const __nv_bfloat16* weight,
                               __nv_bfloat16* y, int dim, float eps, uint8_t* y_fp8, const float* fp8_scale) {
  const size_t row = blockIdx.x;
  const __nv_bfloat16* x_row = x + row * dim;
  __nv_bfloat16* r_row = residual ? residual + row * dim : nullptr;
  float sum_sq = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    float v = __bfloat162float(x_row[i]);
    if (r_row) {
      // HF adds in bf16 (both operands bf16, result rounded to bf16) before normalizing.
      __nv_bfloat16 sum = __float2bfloat16(v + __bfloat162float(r_row[i]));
      r_row[i] = sum;
      v = __bfloat162float(sum);
    }
    sum_sq += v * v;
  }
  float inv_rms = rsqrtf(block_sum(sum_sq) / float(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    float v = r_row ? __bfloat162float(r_row[i]) : __bfloat162float(x_row[i]);
    // HF: weight * hidden.to(input_dtype): the normalized value is rounded to bf16 before the weight multiply.
    __nv_bfloat16 normed = __float2bfloat16(v * inv_rms);
    const __nv_bfloat16 out = __float2bfloat16(__bfloat162float(normed) * __bfloat162float(weight[i]));
    y[row * dim + i] = out;
    // The E4M3 code of the bf16 output: the same code quantize_fp8_bf16 would give on y.
    if (y_fp8) y_fp8[row * dim + i] = quantize_e4m3(__bfloat162float(out), *fp8_scale);
  }
}

}  // namespace

void rmsnorm_bf16(const uint16_t* x, uint16_t* residual, const uint16_t* weight, uint16_t* y, int rows, int dim,
                  float eps, cudaStream_t stream, uint8_t* y_fp8, const float* fp8_scale) {
  if (rows <= 0) return;
  QED_KERNEL_REQUIRE(!y_fp8 || fp8_scale, "rmsnorm_bf16: an fp8 output needs its scale");
  rmsnorm_kernel<<<rows, kThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), reinterpret_cast<__nv_bfloat16*>(residual),
      reinterpret_cast<const __nv_bfloat16*>(weight), reinterpret_cast<__nv_bfloat16*>(y), dim, eps, y_fp8, fp8_scale);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace qed::cuda
