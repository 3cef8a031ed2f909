#include <cuda_bf16.h>

#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fp8_convert.cuh"
#include "backend/cuda/norm_kernels.h"
#include "backend/cuda/pdl.cuh"

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

// HF's bf16 steps: residual add rounded to bf16, normalized value rounded to bf16 before the weight multiply.
__device__ __forceinline__ float norm_out(float v, float inv_rms, float w) {
  return __bfloat162float(__float2bfloat16(v * inv_rms)) * w;
}

// dim % 8 == 0 and dim <= 8 * kMaxRowThreads (every decoder norm we serve): one CTA per row, one 16-byte vector
// per thread, so a row costs one round trip for its inputs and one for its outputs. The weight vector does not
// depend on earlier kernels: it is loaded before pdl_wait(), overlapping the previous kernel's tail. The row sum is
// a single pass (warp shuffles, then every thread adds the warp sums in the same fixed order), and the FP8 scale is
// read once. Measured before it (ncu, H200, 14B shape, 1 row): the 256-thread kernel below took 6.0 us (9.3 with
// the E4M3 output), 2.5 vectors per thread and three barriers.
constexpr int kMaxRowThreads = 1024;
__global__ void __launch_bounds__(kMaxRowThreads)
    rmsnorm_row_kernel(const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ residual,
                       const __nv_bfloat16* __restrict__ weight, __nv_bfloat16* __restrict__ y, int dim, float eps,
                       uint8_t* __restrict__ y_fp8, const float* __restrict__ fp8_scale) {
  __shared__ float warp_sums[kMaxRowThreads / 32];
  const int v = int(threadIdx.x);
  const bool active = v < dim / 8;
  const size_t offset = size_t(blockIdx.x) * dim + size_t(v) * 8;
  float w[8];
  if (active) load_f32x8(weight + size_t(v) * 8, w);
  pdl_wait();
  pdl_trigger();
  const float scale = y_fp8 ? *fp8_scale : 1.0f;
  float values[8];
  float sum_sq = 0.0f;
  if (active) {
    load_f32x8(x + offset, values);
    if (residual) {
      float r[8];
      load_f32x8(residual + offset, r);
#pragma unroll
      for (int j = 0; j < 8; ++j) values[j] = __bfloat162float(__float2bfloat16(values[j] + r[j]));
      store_f32x8(residual + offset, values);  // exact: every value is already a bf16
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) sum_sq += values[j] * values[j];
  }
#pragma unroll
  for (int step = 16; step > 0; step /= 2) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, step);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum_sq;
  __syncthreads();
  float total = 0.0f;
  const int warps = int(blockDim.x) / 32;
  for (int i = 0; i < warps; ++i) total += warp_sums[i];
  if (!active) return;
  const float inv_rms = rsqrtf(total / float(dim) + eps);
  float out[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) out[j] = __bfloat162float(__float2bfloat16(norm_out(values[j], inv_rms, w[j])));
  store_f32x8(y + offset, out);
  if (y_fp8) {
    // The E4M3 codes of the bf16 outputs: the same codes quantize_fp8_bf16 would give on y.
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      lo |= uint32_t(quantize_e4m3(out[j], scale)) << (8 * j);
      hi |= uint32_t(quantize_e4m3(out[j + 4], scale)) << (8 * j);
    }
    *reinterpret_cast<uint2*>(y_fp8 + offset) = make_uint2(lo, hi);
  }
}

// dim % 8 == 0, longer rows: 16-byte loads, the row kept in registers between the two passes (up to kCached vectors per
// thread, i.e. dim <= 8192 at 256 threads; longer rows re-read the tail). __restrict__ matters: without it every
// residual store orders the next load behind it and a one-row norm (batch-1 decode) ran at 20 us instead of ~4.
constexpr int kCached = 4;
__global__ void rmsnorm_vec_kernel(const __nv_bfloat16* __restrict__ x, __nv_bfloat16* __restrict__ residual,
                                   const __nv_bfloat16* __restrict__ weight, __nv_bfloat16* __restrict__ y, int dim,
                                   float eps, uint8_t* __restrict__ y_fp8, const float* __restrict__ fp8_scale) {
  pdl_wait();
  pdl_trigger();
  const size_t row = blockIdx.x;
  const int vectors = dim / 8;
  const __nv_bfloat16* x_row = x + row * dim;
  __nv_bfloat16* r_row = residual ? residual + row * dim : nullptr;
  float cached[kCached][8];
  float sum_sq = 0.0f;
  auto load_row = [&](int v, float(&out)[8]) {
    load_f32x8(x_row + v * 8, out);
    if (r_row) {
      float r[8];
      load_f32x8(r_row + v * 8, r);
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = __bfloat162float(__float2bfloat16(out[j] + r[j]));
      store_f32x8(r_row + v * 8, out);  // exact: every value is already a bf16
    }
  };
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int v = threadIdx.x + k * kThreads;
    if (v < vectors) {
      load_row(v, cached[k]);
#pragma unroll
      for (int j = 0; j < 8; ++j) sum_sq += cached[k][j] * cached[k][j];
    }
  }
  for (int v = threadIdx.x + kCached * kThreads; v < vectors; v += kThreads) {
    float values[8];
    load_row(v, values);
#pragma unroll
    for (int j = 0; j < 8; ++j) sum_sq += values[j] * values[j];
  }
  const float inv_rms = rsqrtf(block_sum(sum_sq) / float(dim) + eps);
  auto store_row = [&](int v, const float(&values)[8]) {
    float w[8], out[8];
    load_f32x8(weight + v * 8, w);
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = norm_out(values[j], inv_rms, w[j]);
    store_f32x8(y + row * dim + v * 8, out);
    if (y_fp8) {
      // The E4M3 codes of the bf16 outputs: the same codes quantize_fp8_bf16 would give on y.
      uint8_t codes[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) codes[j] = quantize_e4m3(__bfloat162float(__float2bfloat16(out[j])), *fp8_scale);
      *reinterpret_cast<uint2*>(y_fp8 + row * dim + v * 8) = *reinterpret_cast<const uint2*>(codes);
    }
  };
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int v = threadIdx.x + k * kThreads;
    if (v < vectors) store_row(v, cached[k]);
  }
  for (int v = threadIdx.x + kCached * kThreads; v < vectors; v += kThreads) {
    float values[8];
    load_f32x8((r_row ? r_row : x_row) + v * 8, values);
    store_row(v, values);
  }
}

// Any dim: one element per step.
__global__ void rmsnorm_kernel(const __nv_bfloat16* x, __nv_bfloat16* residual, const __nv_bfloat16* weight,
                               __nv_bfloat16* y, int dim, float eps, uint8_t* y_fp8, const float* fp8_scale) {
  pdl_wait();
  pdl_trigger();
  const size_t row = blockIdx.x;
  const __nv_bfloat16* x_row = x + row * dim;
  __nv_bfloat16* r_row = residual ? residual + row * dim : nullptr;
  float sum_sq = 0.0f;
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    float v = __bfloat162float(x_row[i]);
    if (r_row) {
      __nv_bfloat16 sum = __float2bfloat16(v + __bfloat162float(r_row[i]));
      r_row[i] = sum;
      v = __bfloat162float(sum);
    }
    sum_sq += v * v;
  }
  float inv_rms = rsqrtf(block_sum(sum_sq) / float(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += kThreads) {
    float v = r_row ? __bfloat162float(r_row[i]) : __bfloat162float(x_row[i]);
    const __nv_bfloat16 out = __float2bfloat16(norm_out(v, inv_rms, __bfloat162float(weight[i])));
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
  const bool vec = dim % 8 == 0;
  if (vec && dim / 8 <= kMaxRowThreads) {
    const unsigned threads = unsigned((dim / 8 + 31) / 32 * 32);
    launch_kernel(rmsnorm_row_kernel, dim3(unsigned(rows)), dim3(threads), 0, stream, true,
                  reinterpret_cast<const __nv_bfloat16*>(x), reinterpret_cast<__nv_bfloat16*>(residual),
                  reinterpret_cast<const __nv_bfloat16*>(weight), reinterpret_cast<__nv_bfloat16*>(y), dim, eps, y_fp8,
                  fp8_scale);
    return;
  }
  launch_kernel(vec ? rmsnorm_vec_kernel : rmsnorm_kernel, dim3(unsigned(rows)), dim3(kThreads), 0, stream, true,
                reinterpret_cast<const __nv_bfloat16*>(x), reinterpret_cast<__nv_bfloat16*>(residual),
                reinterpret_cast<const __nv_bfloat16*>(weight), reinterpret_cast<__nv_bfloat16*>(y), dim, eps, y_fp8,
                fp8_scale);
}

}  // namespace qed::cuda
