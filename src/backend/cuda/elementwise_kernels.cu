#include <cuda_bf16.h>

#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/fp8_convert.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope_rotate.cuh"
#include "backend/cuda/silu_mul.cuh"

namespace qed::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void gather_rows_kernel(const __nv_bfloat16* table, const int32_t* ids, __nv_bfloat16* out, int dim) {
  pdl_wait();
  pdl_trigger();
  const size_t row = blockIdx.x;
  const __nv_bfloat16* src = table + size_t(ids[row]) * dim;
  __nv_bfloat16* dst = out + row * dim;
  if (dim % 8 == 0) {
    for (int i = threadIdx.x * 8; i < dim; i += kThreads * 8) {
      *reinterpret_cast<Bf16x8*>(dst + i) = *reinterpret_cast<const Bf16x8*>(src + i);
    }
  } else {
    for (int i = threadIdx.x; i < dim; i += kThreads) dst[i] = src[i];
  }
}

constexpr int kRopeHeadsPerBlock = 8;
constexpr int kMaxRopeHalf = 256;  // head_dim <= 512

// grid (rows, head groups). The angles of a row are computed once into shared memory, not once per head.
__global__ void rope_kernel(__nv_bfloat16* __restrict__ x, int row_stride, const int32_t* __restrict__ positions,
                            const float* __restrict__ inv_freq, int num_heads, int head_dim) {
  __shared__ float shared_cos[kMaxRopeHalf], shared_sin[kMaxRopeHalf];
  pdl_wait();
  pdl_trigger();
  const size_t row = blockIdx.x;
  const int half = head_dim / 2;
  const float position = float(positions[row]);
  for (int i = threadIdx.x; i < half; i += kThreads) rope_angle(inv_freq[i], position, &shared_sin[i], &shared_cos[i]);
  __syncthreads();
  const int first_head = blockIdx.y * kRopeHeadsPerBlock;
  const int heads = min(kRopeHeadsPerBlock, num_heads - first_head);
  __nv_bfloat16* base = x + row * size_t(row_stride) + size_t(first_head) * head_dim;
  for (int task = threadIdx.x; task < heads * half; task += kThreads) {
    const int h = task / half, i = task % half;
    const float s = shared_sin[i], c = shared_cos[i];
    __nv_bfloat16* head = base + size_t(h) * head_dim;
    rope_rotate(__bfloat162float(head[i]), __bfloat162float(head[i + half]), c, s, head[i], head[i + half]);
  }
}

// grid (rows, column chunks of kThreads * 8): a single decode row still spreads over several SMs.
// out_fp8 (optional): the E4M3 codes of the bf16 outputs divided by *fp8_scale, as quantize_fp8_bf16 on out.
__global__ void silu_and_mul_kernel(const __nv_bfloat16* __restrict__ gate_up, __nv_bfloat16* __restrict__ out,
                                    int inter, uint8_t* __restrict__ out_fp8, const float* __restrict__ fp8_scale) {
  pdl_wait();
  pdl_trigger();
  const size_t row = blockIdx.x;
  const __nv_bfloat16* gate = gate_up + row * 2 * size_t(inter);
  const __nv_bfloat16* up = gate + inter;
  __nv_bfloat16* dst = out + row * size_t(inter);
  const int begin = blockIdx.y * kThreads * 8, end = min(inter, begin + kThreads * 8);
  uint8_t* dst_fp8 = out_fp8 ? out_fp8 + row * size_t(inter) : nullptr;
  const float scale = out_fp8 ? *fp8_scale : 1.0f;
  if (inter % 8 == 0) {
    const int i = begin + threadIdx.x * 8;
    if (i < end) {
      float g[8], u[8], y[8];
      load_f32x8(gate + i, g);
      load_f32x8(up + i, u);
#pragma unroll
      for (int j = 0; j < 8; ++j) y[j] = silu_mul(g[j], u[j]);
      store_f32x8(dst + i, y);
      if (dst_fp8) {
        uint32_t lo = 0, hi = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          lo |= uint32_t(quantize_e4m3(__bfloat162float(__float2bfloat16(y[j])), scale)) << (8 * j);
          hi |= uint32_t(quantize_e4m3(__bfloat162float(__float2bfloat16(y[j + 4])), scale)) << (8 * j);
        }
        *reinterpret_cast<uint2*>(dst_fp8 + i) = make_uint2(lo, hi);
      }
    }
  } else {
    for (int i = begin + threadIdx.x; i < end; i += kThreads) {
      const __nv_bfloat16 value = __float2bfloat16(silu_mul(__bfloat162float(gate[i]), __bfloat162float(up[i])));
      dst[i] = value;
      if (dst_fp8) dst_fp8[i] = quantize_e4m3(__bfloat162float(value), scale);
    }
  }
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* in, float* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}

__global__ void f32_to_bf16_kernel(const float* in, __nv_bfloat16* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16(in[i]);
  }
}

__device__ uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__global__ void fill_uniform_kernel(__nv_bfloat16* out, size_t n, uint64_t seed, float low, float high) {
  const uint64_t key = mix64(seed);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float unit = float(mix64(key ^ i) >> 40) * 0x1.0p-24f;  // [0, 1)
    out[i] = __float2bfloat16(low + (high - low) * unit);
  }
}

unsigned grid_for(size_t n) {
  const size_t blocks = (n + kThreads - 1) / kThreads;
  return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

void fill_uniform_bf16(uint16_t* out, size_t n, uint64_t seed, float low, float high, cudaStream_t stream) {
  if (n == 0) return;
  fill_uniform_kernel<<<grid_for(n), kThreads, 0, stream>>>(as_bf16(out), n, seed, low, high);
  QED_CUDA_CHECK_LAUNCH();
}

void gather_rows_bf16(const uint16_t* table, const int32_t* ids, uint16_t* out, int rows, int dim,
                      cudaStream_t stream) {
  if (rows <= 0) return;
  launch_kernel(gather_rows_kernel, dim3(unsigned(rows)), dim3(kThreads), 0, stream, true, as_bf16(table), ids,
                as_bf16(out), dim);
}

void rope_bf16(uint16_t* x, int row_stride, const int32_t* positions, const float* inv_freq, int rows, int num_heads,
               int head_dim, cudaStream_t stream) {
  if (rows <= 0) return;
  QED_KERNEL_REQUIRE(head_dim / 2 <= kMaxRopeHalf, "rope: head_dim above 512");
  const dim3 grid(unsigned(rows), unsigned((num_heads + kRopeHeadsPerBlock - 1) / kRopeHeadsPerBlock));
  launch_kernel(rope_kernel, grid, dim3(kThreads), 0, stream, true, as_bf16(x), row_stride, positions, inv_freq,
                num_heads, head_dim);
}

void silu_and_mul_bf16(const uint16_t* gate_up, uint16_t* out, int rows, int inter, cudaStream_t stream,
                       uint8_t* out_fp8, const float* fp8_scale) {
  if (rows <= 0) return;
  QED_KERNEL_REQUIRE(!out_fp8 || (fp8_scale && reinterpret_cast<uintptr_t>(out_fp8) % 8 == 0),
                     "silu_and_mul_bf16: an fp8 output needs its scale and 8-byte alignment");
  const dim3 grid(unsigned(rows), unsigned((inter + kThreads * 8 - 1) / (kThreads * 8)));
  launch_kernel(silu_and_mul_kernel, grid, dim3(kThreads), 0, stream, true, as_bf16(gate_up), as_bf16(out), inter,
                out_fp8, fp8_scale);
}

void bf16_to_f32(const uint16_t* in, float* out, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  bf16_to_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(as_bf16(in), out, n);
  QED_CUDA_CHECK_LAUNCH();
}

void f32_to_bf16(const float* in, uint16_t* out, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  f32_to_bf16_kernel<<<grid_for(n), kThreads, 0, stream>>>(in, as_bf16(out), n);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace qed::cuda
