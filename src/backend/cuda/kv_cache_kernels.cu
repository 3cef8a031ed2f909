#include <cuda_bf16.h>

#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_cache_kernels.h"

namespace qed::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void write_kv_kernel(const __nv_bfloat16* k, const __nv_bfloat16* v, int src_stride,
                                const int32_t* slot_mapping, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache,
                                int kv_dim) {
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

__global__ void copy_blocks_kernel(__nv_bfloat16* k_cache, __nv_bfloat16* v_cache, size_t layer_stride,
                                   const int32_t* pairs, size_t block_elems) {
  const int pair = blockIdx.x;
  const size_t layer = blockIdx.y;
  const size_t src = size_t(pairs[2 * pair]) * block_elems + layer * layer_stride;
  const size_t dst = size_t(pairs[2 * pair + 1]) * block_elems + layer * layer_stride;
  for (size_t i = threadIdx.x; i < block_elems; i += kThreads) {
    k_cache[dst + i] = k_cache[src + i];
    v_cache[dst + i] = v_cache[src + i];
  }
}

}  // namespace

void write_kv_bf16(const uint16_t* k, const uint16_t* v, int src_stride, const int32_t* slot_mapping, uint16_t* k_cache,
                   uint16_t* v_cache, int rows, int kv_dim, cudaStream_t stream) {
  if (rows <= 0) return;
  write_kv_kernel<<<rows, kThreads, 0, stream>>>(as_bf16(k), as_bf16(v), src_stride, slot_mapping, as_bf16(k_cache),
                                                 as_bf16(v_cache), kv_dim);
  QED_CUDA_CHECK_LAUNCH();
}

void copy_kv_blocks_bf16(uint16_t* k_cache, uint16_t* v_cache, size_t layer_stride, int num_layers,
                         const int32_t* pairs, int num_pairs, size_t block_elems, cudaStream_t stream) {
  if (num_pairs <= 0 || num_layers <= 0) return;
  copy_blocks_kernel<<<dim3(unsigned(num_pairs), unsigned(num_layers)), kThreads, 0, stream>>>(
      as_bf16(k_cache), as_bf16(v_cache), layer_stride, pairs, block_elems);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace qed::cuda
