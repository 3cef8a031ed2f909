#include <cuda_bf16.h>

#include <type_traits>

#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fp8_convert.cuh"
#include "backend/cuda/kv_cache_kernels.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope_rotate.cuh"

namespace qed::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void write_kv_kernel(const __nv_bfloat16* k, const __nv_bfloat16* v, int src_stride,
                                const int32_t* slot_mapping, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                                int kv_dim) {
  pdl_wait();
  pdl_trigger();
  const size_t row = blockIdx.x;
  const size_t slot = size_t(slot_mapping[row]);
  const __nv_bfloat16* k_src = k + row * size_t(src_stride);
  const __nv_bfloat16* v_src = v + row * size_t(src_stride);
  __nv_bfloat16* k_dst = k_cache + slot * kv_dim;
  __nv_bfloat16* v_dst = v_cache + slot * kv_dim;
  // The 16-byte path needs every row start 16-byte aligned: the k/v offsets inside the qkv row included.
  const bool aligned = (reinterpret_cast<uintptr_t>(k) | reinterpret_cast<uintptr_t>(v)) % 16 == 0;
  if (aligned && kv_dim % 8 == 0 && src_stride % 8 == 0) {
    for (int i = threadIdx.x * 8; i < kv_dim; i += kThreads * 8) {
      *reinterpret_cast<Bf16x8*>(k_dst + i) = *reinterpret_cast<const Bf16x8*>(k_src + i);
      *reinterpret_cast<Bf16x8*>(v_dst + i) = *reinterpret_cast<const Bf16x8*>(v_src + i);
    }
  } else {
    for (int i = threadIdx.x; i < kv_dim; i += kThreads) {
      k_dst[i] = k_src[i];
      v_dst[i] = v_src[i];
    }
  }
}

// Eight elements per thread: one 16-byte bf16 load each of k and v, one 8-byte store of codes each.
__global__ void write_kv_fp8_kernel(const __nv_bfloat16* k, const __nv_bfloat16* v, int src_stride,
                                    const int32_t* slot_mapping, uint8_t* k_cache, uint8_t* v_cache, int kv_dim,
                                    float k_scale, float v_scale) {
  pdl_wait();
  pdl_trigger();
  const size_t row = blockIdx.x;
  const size_t slot = size_t(slot_mapping[row]);
  const __nv_bfloat16* src[2] = {k + row * size_t(src_stride), v + row * size_t(src_stride)};
  uint8_t* dst[2] = {k_cache + slot * kv_dim, v_cache + slot * kv_dim};
  const float scale[2] = {k_scale, v_scale};
  const bool aligned =
      (reinterpret_cast<uintptr_t>(k) | reinterpret_cast<uintptr_t>(v)) % 16 == 0 && src_stride % 8 == 0;
  for (int i = threadIdx.x * 8; i < kv_dim; i += kThreads * 8) {
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      float x[8];
      if (aligned) {
        load_f32x8(src[t] + i, x);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = __bfloat162float(src[t][i + e]);
      }
      uint32_t lo = 0, hi = 0;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        lo |= uint32_t(quantize_e4m3(x[e], scale[t])) << (8 * e);
        hi |= uint32_t(quantize_e4m3(x[e + 4], scale[t])) << (8 * e);
      }
      *reinterpret_cast<uint2*>(dst[t] + i) = make_uint2(lo, hi);
    }
  }
}

constexpr int kRopeKvThreads = 256;
constexpr int kRopeKvHeadsPerBlock = 8;
constexpr int kMaxRopeKvHalf = 256;  // head_dim <= 512

// grid (rows, groups of kRopeKvHeadsPerBlock among the row's num_heads + 2 × num_kv_heads heads: q, k, v). q and
// k heads are rotated in place (rope_kernel's steps, rope_rotate.cuh); k heads are then stored to the cache from
// the rotated bf16 values, v heads copied (bf16) or quantized (FP8) as write_kv_*_kernel do. One thread per dim pair
// (i, i + half) of a head.
template <bool FP8>
__global__ void __launch_bounds__(kRopeKvThreads)
    rope_write_kv_kernel(__nv_bfloat16* __restrict__ qkv, int row_stride, const int32_t* __restrict__ positions,
                         const float* __restrict__ inv_freq, const int32_t* __restrict__ slot_mapping,
                         void* __restrict__ k_cache, void* __restrict__ v_cache, float k_scale, float v_scale,
                         int num_heads, int num_kv_heads, int head_dim) {
  __shared__ float shared_cos[kMaxRopeKvHalf], shared_sin[kMaxRopeKvHalf];
  using Element = std::conditional_t<FP8, uint8_t, __nv_bfloat16>;
  const int half = head_dim / 2;
  const int first_head = int(blockIdx.y) * kRopeKvHeadsPerBlock;
  const int total_heads = num_heads + 2 * num_kv_heads;
  const int heads = min(kRopeKvHeadsPerBlock, total_heads - first_head);
  const bool rotates = first_head < num_heads + num_kv_heads;  // this CTA has q or k heads
  float freq = 0.0f;
  if (rotates && int(threadIdx.x) < half) freq = inv_freq[threadIdx.x];  // a constant: before the wait
  pdl_wait();
  pdl_trigger();
  const size_t row = blockIdx.x;
  if (rotates) {
    const float position = float(positions[row]);
    if (int(threadIdx.x) < half) rope_angle(freq, position, &shared_sin[threadIdx.x], &shared_cos[threadIdx.x]);
    for (int i = int(threadIdx.x) + kRopeKvThreads; i < half; i += kRopeKvThreads) {
      rope_angle(inv_freq[i], position, &shared_sin[i], &shared_cos[i]);
    }
    __syncthreads();
  }
  const size_t kv_dim = size_t(num_kv_heads) * head_dim;
  const size_t slot = size_t(slot_mapping[row]);
  __nv_bfloat16* row_base = qkv + row * size_t(row_stride);
  for (int task = int(threadIdx.x); task < heads * half; task += kRopeKvThreads) {
    const int h = first_head + task / half, i = task % half;
    __nv_bfloat16* head = row_base + size_t(h) * head_dim;  // q, k and v heads are adjacent in the row
    __nv_bfloat16 lo = head[i], hi = head[i + half];
    if (h < num_heads + num_kv_heads) {
      rope_rotate(__bfloat162float(lo), __bfloat162float(hi), shared_cos[i], shared_sin[i], lo, hi);
      head[i] = lo;
      head[i + half] = hi;
    }
    if (h < num_heads) continue;
    const bool is_k = h < num_heads + num_kv_heads;
    const int kv_head = is_k ? h - num_heads : h - num_heads - num_kv_heads;
    Element* dst = static_cast<Element*>(is_k ? k_cache : v_cache) + slot * kv_dim + size_t(kv_head) * head_dim;
    if constexpr (FP8) {
      const float scale = is_k ? k_scale : v_scale;
      dst[i] = quantize_e4m3(__bfloat162float(lo), scale);
      dst[i + half] = quantize_e4m3(__bfloat162float(hi), scale);
    } else {
      dst[i] = lo;
      dst[i + half] = hi;
    }
  }
}

// 16-byte copies when every block start is 16-byte aligned (the caches are, and block_bytes % 16 == 0), bytes else.
__global__ void copy_blocks_kernel(uint8_t* k_cache, uint8_t* v_cache, size_t layer_stride, const int32_t* pairs,
                                   size_t block_bytes) {
  const int pair = blockIdx.x;
  const size_t layer = blockIdx.y;
  const size_t src = size_t(pairs[2 * pair]) * block_bytes + layer * layer_stride;
  const size_t dst = size_t(pairs[2 * pair + 1]) * block_bytes + layer * layer_stride;
  const bool vectors =
      (reinterpret_cast<uintptr_t>(k_cache) | reinterpret_cast<uintptr_t>(v_cache) | layer_stride | block_bytes) % 16 ==
      0;
  if (vectors) {
    for (size_t i = threadIdx.x * 16; i < block_bytes; i += kThreads * 16) {
      *reinterpret_cast<uint4*>(k_cache + dst + i) = *reinterpret_cast<const uint4*>(k_cache + src + i);
      *reinterpret_cast<uint4*>(v_cache + dst + i) = *reinterpret_cast<const uint4*>(v_cache + src + i);
    }
  } else {
    for (size_t i = threadIdx.x; i < block_bytes; i += kThreads) {
      k_cache[dst + i] = k_cache[src + i];
      v_cache[dst + i] = v_cache[src + i];
    }
  }
}

}  // namespace

void write_kv_bf16(const uint16_t* k, const uint16_t* v, int src_stride, const int32_t* slot_mapping, uint16_t* k_cache,
                   uint16_t* v_cache, int rows, int kv_dim, cudaStream_t stream) {
  if (rows <= 0) return;
  launch_kernel(write_kv_kernel, dim3(unsigned(rows)), dim3(kThreads), 0, stream, true, as_bf16(k), as_bf16(v),
                src_stride, slot_mapping, as_bf16(k_cache), as_bf16(v_cache), kv_dim);
}

void write_kv_fp8(const uint16_t* k, const uint16_t* v, int src_stride, const int32_t* slot_mapping, uint8_t* k_cache,
                  uint8_t* v_cache, int rows, int kv_dim, float k_scale, float v_scale, cudaStream_t stream) {
  if (rows <= 0) return;
  QED_KERNEL_REQUIRE(kv_dim % 8 == 0, "write_kv_fp8: kv_dim must be a multiple of 8");
  QED_KERNEL_REQUIRE(k_scale > 0.0f && v_scale > 0.0f, "write_kv_fp8: scales must be positive");
  launch_kernel(write_kv_fp8_kernel, dim3(unsigned(rows)), dim3(kThreads), 0, stream, true, as_bf16(k), as_bf16(v),
                src_stride, slot_mapping, k_cache, v_cache, kv_dim, k_scale, v_scale);
}

void rope_write_kv(uint16_t* qkv, int row_stride, const int32_t* positions, const float* inv_freq,
                   const int32_t* slot_mapping, const KvCacheTarget& cache, int rows, int num_heads, int num_kv_heads,
                   int head_dim, cudaStream_t stream) {
  if (rows <= 0) return;
  QED_KERNEL_REQUIRE(head_dim % 2 == 0 && head_dim / 2 <= kMaxRopeKvHalf, "rope_write_kv: head_dim above 512 or odd");
  QED_KERNEL_REQUIRE(!cache.fp8 || (cache.k_scale > 0.0f && cache.v_scale > 0.0f),
                     "rope_write_kv: scales must be positive");
  const int heads = num_heads + 2 * num_kv_heads;
  const dim3 grid(unsigned(rows), unsigned((heads + kRopeKvHeadsPerBlock - 1) / kRopeKvHeadsPerBlock));
  launch_kernel(cache.fp8 ? rope_write_kv_kernel<true> : rope_write_kv_kernel<false>, grid, dim3(kRopeKvThreads), 0,
                stream, true, as_bf16(qkv), row_stride, positions, inv_freq, slot_mapping, cache.k, cache.v,
                cache.k_scale, cache.v_scale, num_heads, num_kv_heads, head_dim);
}

void copy_kv_blocks(void* k_cache, void* v_cache, size_t layer_stride_bytes, int num_layers, const int32_t* pairs,
                    int num_pairs, size_t block_bytes, cudaStream_t stream) {
  if (num_pairs <= 0 || num_layers <= 0) return;
  copy_blocks_kernel<<<dim3(unsigned(num_pairs), unsigned(num_layers)), kThreads, 0, stream>>>(
      static_cast<uint8_t*>(k_cache), static_cast<uint8_t*>(v_cache), layer_stride_bytes, pairs, block_bytes);
  QED_CUDA_CHECK_LAUNCH();
}

void copy_kv_blocks_bf16(uint16_t* k_cache, uint16_t* v_cache, size_t layer_stride, int num_layers,
                         const int32_t* pairs, int num_pairs, size_t block_elems, cudaStream_t stream) {
  copy_kv_blocks(k_cache, v_cache, layer_stride * sizeof(uint16_t), num_layers, pairs, num_pairs,
                 block_elems * sizeof(uint16_t), stream);
}

}  // namespace qed::cuda
