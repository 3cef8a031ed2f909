#include <cuda_bf16.h>

#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fp8_convert.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/quant_kernels.h"

namespace qed::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kFp8Max = 448.0f;

unsigned grid_for(size_t items) {
  const size_t blocks = (items + kThreads - 1) / kThreads;
  return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

__global__ void quantize_fp8_kernel(const __nv_bfloat16* x, size_t n, const float* scale_ptr, uint8_t* out) {
  pdl_wait();  // the scale too: a dynamic one is computed by the kernel before
  pdl_trigger();
  const float scale = *scale_ptr;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  const size_t first = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  const size_t groups = n / 8;
  for (size_t g = first; g < groups; g += stride) {
    float v[8];
    load_f32x8(x + 8 * g, v);
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      lo |= uint32_t(quantize_e4m3(v[i], scale)) << (8 * i);
      hi |= uint32_t(quantize_e4m3(v[i + 4], scale)) << (8 * i);
    }
    *reinterpret_cast<uint2*>(out + 8 * g) = make_uint2(lo, hi);
  }
  for (size_t i = groups * 8 + first; i < n; i += stride) {
    out[i] = quantize_e4m3(__bfloat162float(x[i]), scale);
  }
}

__global__ void amax_kernel(const __nv_bfloat16* x, size_t n, float* amax_bits) {
  float local = 0.0f;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    local = fmaxf(local, fabsf(__bfloat162float(x[i])));  // fmaxf drops NaN
  }
  for (int offset = 16; offset > 0; offset /= 2) local = fmaxf(local, __shfl_xor_sync(0xFFFFFFFFu, local, offset));
  __shared__ float warp_max[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = local;
  __syncthreads();
  if (threadIdx.x == 0) {
    float block = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) block = fmaxf(block, warp_max[w]);
    // Non-negative floats order as their bit patterns: an integer atomicMax is a float max.
    atomicMax(reinterpret_cast<unsigned*>(amax_bits), __float_as_uint(block));
  }
}

__global__ void scale_from_amax_kernel(float* value) {
  const float amax = *value;
  *value = amax > 0.0f ? __fdiv_rn(amax, kFp8Max) : 1.0f;
}

__global__ void scale_rows_kernel(const float* acc, const float* x_scale, const float* w_scales,
                                  const __nv_bfloat16* bias, __nv_bfloat16* y, size_t total, int out) {
  const float xs = x_scale ? *x_scale : 1.0f;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int j = int(i % size_t(out));
    // The reference's order: the two scales multiply first, then the dot product, then the bias.
    float value = __fmul_rn(acc[i], __fmul_rn(xs, w_scales[j]));
    if (bias) value = __fadd_rn(value, __bfloat162float(bias[j]));
    y[i] = __float2bfloat16(value);
  }
}

__global__ void int8_to_bf16_kernel(const int8_t* q, size_t n, __nv_bfloat16* out) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  const size_t first = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  const size_t groups = n / 16;
  for (size_t g = first; g < groups; g += stride) {
    const int4 packed = *reinterpret_cast<const int4*>(q + 16 * g);
    const int words[4] = {packed.x, packed.y, packed.z, packed.w};
    float v[16];
#pragma unroll
    for (int b = 0; b < 16; ++b) v[b] = float(int8_t(words[b / 4] >> (8 * (b % 4))));
    float lo[8], hi[8];
#pragma unroll
    for (int b = 0; b < 8; ++b) {
      lo[b] = v[b];
      hi[b] = v[b + 8];
    }
    store_f32x8(out + 16 * g, lo);
    store_f32x8(out + 16 * g + 8, hi);
  }
  for (size_t i = groups * 16 + first; i < n; i += stride) out[i] = __float2bfloat16(float(q[i]));
}

__device__ uint64_t mix64(uint64_t v) {
  v += 0x9E3779B97F4A7C15ull;
  v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ull;
  v = (v ^ (v >> 27)) * 0x94D049BB133111EBull;
  return v ^ (v >> 31);
}

__global__ void fill_uniform_int8_kernel(int8_t* out, size_t n, uint64_t seed) {
  const uint64_t key = mix64(seed);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    out[i] = int8_t(int(mix64(key ^ i) % 255u) - 127);
  }
}

}  // namespace

void quantize_fp8_bf16(const uint16_t* x, size_t n, const float* scale, uint8_t* out, cudaStream_t stream) {
  if (n == 0) return;
  QED_KERNEL_REQUIRE(reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0,
                     "quantize_fp8_bf16: x must be 16-byte and out 8-byte aligned");
  launch_kernel(quantize_fp8_kernel, dim3(grid_for((n + 7) / 8)), dim3(kThreads), 0, stream, true, as_bf16(x), n, scale,
                out);
}

void dynamic_fp8_scale_bf16(const uint16_t* x, size_t n, float* scale, cudaStream_t stream) {
  QED_CUDA_CHECK(cudaMemsetAsync(scale, 0, sizeof(float), stream));
  if (n > 0) {
    amax_kernel<<<grid_for(n), kThreads, 0, stream>>>(as_bf16(x), n, scale);
    QED_CUDA_CHECK_LAUNCH();
  }
  scale_from_amax_kernel<<<1, 1, 0, stream>>>(scale);
  QED_CUDA_CHECK_LAUNCH();
}

void scale_rows_to_bf16(const float* acc, const float* x_scale, const float* w_scales, const uint16_t* bias,
                        uint16_t* y, int rows, int out, cudaStream_t stream) {
  if (rows <= 0 || out <= 0) return;
  const size_t total = size_t(rows) * size_t(out);
  scale_rows_kernel<<<grid_for(total), kThreads, 0, stream>>>(acc, x_scale, w_scales, bias ? as_bf16(bias) : nullptr,
                                                              as_bf16(y), total, out);
  QED_CUDA_CHECK_LAUNCH();
}

void int8_to_bf16(const int8_t* q, size_t n, uint16_t* out, cudaStream_t stream) {
  if (n == 0) return;
  QED_KERNEL_REQUIRE(reinterpret_cast<uintptr_t>(q) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0,
                     "int8_to_bf16: buffers must be 16-byte aligned");
  int8_to_bf16_kernel<<<grid_for((n + 15) / 16), kThreads, 0, stream>>>(q, n, as_bf16(out));
  QED_CUDA_CHECK_LAUNCH();
}

void fill_uniform_int8(int8_t* out, size_t n, uint64_t seed, cudaStream_t stream) {
  if (n == 0) return;
  fill_uniform_int8_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, n, seed);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace qed::cuda
