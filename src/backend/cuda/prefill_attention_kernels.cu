#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstring>

#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fp8_convert.cuh"
#include "backend/cuda/prefill_attention_kernels.h"

namespace qed::cuda {
namespace {

// The primitives prefill_attention_tile.cuh is written against, as PTX (sm_80 and later).
__device__ __forceinline__ unsigned char* prefill_shared_memory() {
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  return smem_bytes;
}

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global → shared without a register round trip; `valid` false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// 8 E4M3 codes → their values as 8 bf16 (exact: E4M3 ⊂ bf16), via fp16 code × 2^-8 (bit operations) and fp32.
__device__ __forceinline__ uint4 load_e4m3x8_as_bf16x8(const uint8_t* src, bool valid) {
  if (!valid) return make_uint4(0, 0, 0, 0);
  const uint2 codes = *reinterpret_cast<const uint2*>(src);
  uint32_t halves[4];
  e4m3x4_to_f16x2_times_2m8(codes.x, halves[0], halves[1]);
  e4m3x4_to_f16x2_times_2m8(codes.y, halves[2], halves[3]);
  uint32_t out[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 pair;
    memcpy(&pair, &halves[i], sizeof(pair));
    const float2 f = __half22float2(pair);
    const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * 256.0f, f.y * 256.0f);
    memcpy(&out[i], &b, sizeof(b));
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

__device__ __forceinline__ void store_shared_16(uint32_t dst, uint4 v) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}

// Four 8×8 bf16 matrices; lane l gives the address of row l % 8 of matrix l / 8, and register i receives matrix i
// (lane t holding row t / 4, columns 2(t % 4), 2(t % 4) + 1 — or, with .trans, that element of the transpose).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// d (16×8 fp32) += a (16×16 bf16, row-major) · b (16×8 bf16, column-major).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace
}  // namespace qed::cuda

#include "backend/cuda/prefill_attention_tile.cuh"

namespace qed::cuda {
namespace {

template <int D, int WARPS, int SLICES, bool FP8>
void launch_kernel(const PrefillParams& params, int num_tiles, cudaStream_t stream) {
  using L = SmemLayout<D, 16 * WARPS * SLICES>;
  constexpr int bytes = FP8 ? L::kBytesFp8 : L::kBytes;  // FP8: + the code staging area
  // Above 48 KiB a kernel's dynamic shared memory must be opted into (per function; cheap, not a stream operation).
  QED_CUDA_CHECK(cudaFuncSetAttribute(prefill_attention_kernel<D, WARPS, SLICES, FP8>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  const unsigned blocks = unsigned(num_tiles) * unsigned(params.num_heads);
  prefill_attention_kernel<D, WARPS, SLICES, FP8><<<blocks, 32 * WARPS, bytes, stream>>>(params);
  QED_CUDA_CHECK_LAUNCH();
}

template <int D, int WARPS, int SLICES>
void launch(const PrefillParams& params, int num_tiles, cudaStream_t stream) {
  if (params.k_codes != nullptr) {
    launch_kernel<D, WARPS, SLICES, true>(params, num_tiles, stream);
  } else {
    launch_kernel<D, WARPS, SLICES, false>(params, num_tiles, stream);
  }
}

template <int D>
void launch_tiling(const PrefillParams& params, int num_tiles, PrefillTiling tiling, cudaStream_t stream) {
  if (tiling.rows == 64) {
    launch<D, 4, 1>(params, num_tiles, stream);
  } else if (tiling.warps == 8) {
    launch<D, 8, 1>(params, num_tiles, stream);
  } else {
    launch<D, 4, 2>(params, num_tiles, stream);
  }
}

}  // namespace

void prefill_attention(const uint16_t* q, int q_stride, const KvCacheView& cache, const AttentionBatch& batch,
                       const int32_t* tiles, int num_tiles, PrefillTiling tiling, const AttentionShape& shape,
                       uint16_t* out, cudaStream_t stream) {
  if (num_tiles <= 0) return;
  QED_KERNEL_REQUIRE(prefill_tiling_supported(tiling),
                     "prefill attention: tiling must be 64 rows / 4 warps or 128 rows / 8 or 4 warps");
  QED_KERNEL_REQUIRE(shape.num_kv_heads > 0 && shape.num_heads % shape.num_kv_heads == 0,
                     "prefill attention: num_heads must be a positive multiple of num_kv_heads");
  QED_KERNEL_REQUIRE(shape.block_size > 0, "prefill attention: block_size must be positive");
  QED_KERNEL_REQUIRE(q_stride % 8 == 0, "prefill attention: q rows must start 16-byte aligned");
  QED_KERNEL_REQUIRE(prefill_attention_supports(shape.head_dim), "prefill attention: head_dim must be 64 or 128");
  QED_KERNEL_REQUIRE((long long)num_tiles * shape.num_heads <= INT_MAX, "prefill attention: too many tiles");
  QED_KERNEL_REQUIRE(!cache.fp8 || (cache.k_scale > 0.0f && cache.v_scale > 0.0f),
                     "prefill attention: FP8 cache scales must be positive");
  PrefillParams params{};
  params.q = as_bf16(q);
  params.q_stride = q_stride;
  if (cache.fp8) {
    params.k_codes = static_cast<const uint8_t*>(cache.k);
    params.v_codes = static_cast<const uint8_t*>(cache.v);
    params.v_dequant = cache.v_scale;
  } else {
    params.k_cache = static_cast<const __nv_bfloat16*>(cache.k);
    params.v_cache = static_cast<const __nv_bfloat16*>(cache.v);
  }
  params.seq_q_start = batch.seq_q_start;
  params.seq_num_new = batch.seq_num_new;
  params.seq_num_cached = batch.seq_num_cached;
  params.seq_block_offset = batch.seq_block_offset;
  params.block_tables = batch.block_tables;
  params.tiles = tiles;
  params.num_heads = shape.num_heads;
  params.group = shape.num_heads / shape.num_kv_heads;
  params.kv_dim = shape.num_kv_heads * shape.head_dim;
  params.block_size = shape.block_size;
  params.scale_log2 = shape.scale * kLog2e * (cache.fp8 ? cache.k_scale : 1.0f);
  params.out = as_bf16(out);
  if (shape.head_dim == 64) {
    launch_tiling<64>(params, num_tiles, tiling, stream);
  } else {
    launch_tiling<128>(params, num_tiles, tiling, stream);
  }
}

void prefill_attention_bf16(const uint16_t* q, int q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                            const AttentionBatch& batch, const int32_t* tiles, int num_tiles, PrefillTiling tiling,
                            const AttentionShape& shape, uint16_t* out, cudaStream_t stream) {
  const KvCacheView cache{k_cache, v_cache, false, 1.0f, 1.0f};
  prefill_attention(q, q_stride, cache, batch, tiles, num_tiles, tiling, shape, out, stream);
}

}  // namespace qed::cuda
