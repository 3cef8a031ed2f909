#pragma once
// Paged KV cache writes and block copies. One layer's K (or V) cache is [num_blocks × block_size] rows of
// kv_dim = num_kv_heads × head_dim elements, bf16 or FP8 E4M3 (per-tensor scale per layer, vLLM's
// kv_cache_dtype fp8: code = saturate(x / scale), read back as code × scale), the layout of cpu::PagedKv; a "slot"
// below is a physical row, block_table[s / block_size] * block_size + s % block_size, computed on the host.
#include <cuda_runtime.h>

#include <cstdint>

namespace qed::cuda {

// k_cache[slot_mapping[r]] = k[r], v_cache[...] = v[r] for r < rows (cpu::write_kv); source rows are
// `src_stride` elements apart (k and v live inside the fused qkv row).
void write_kv_bf16(const uint16_t* k, const uint16_t* v, int src_stride, const int32_t* slot_mapping, uint16_t* k_cache,
                   uint16_t* v_cache, int rows, int kv_dim, cudaStream_t stream);

// The same into an FP8 cache: k_cache[slot][i] = E4M3(k[r][i] / k_scale) with IEEE division and cpu::quantize_fp8's
// rounding (bit-exact), v likewise. kv_dim must be a multiple of 8.
void write_kv_fp8(const uint16_t* k, const uint16_t* v, int src_stride, const int32_t* slot_mapping, uint8_t* k_cache,
                  uint8_t* v_cache, int rows, int kv_dim, float k_scale, float v_scale, cudaStream_t stream);

// One layer's caches as a writer sees them: bf16, or FP8 E4M3 codes of x / scale.
struct KvCacheTarget {
  void* k = nullptr;
  void* v = nullptr;
  bool fp8 = false;
  float k_scale = 1.0f, v_scale = 1.0f;
};

// rope_bf16 on the q and k heads of each fused qkv row (num_heads q heads, then num_kv_heads k heads, then as many
// v heads, rows row_stride elements apart), then the rotated k and the v of row r written to the cache at
// slot_mapping[r], in one launch: bit-identical to rope_bf16 followed by write_kv_bf16 / write_kv_fp8. The q and k
// of qkv are left rotated (attention reads q there), v as it was.
void rope_write_kv(uint16_t* qkv, int row_stride, const int32_t* positions, const float* inv_freq,
                   const int32_t* slot_mapping, const KvCacheTarget& cache, int rows, int num_heads, int num_kv_heads,
                   int head_dim, cudaStream_t stream);

// For each of num_layers layers (caches layer_stride_bytes apart) and each (src, dst) pair in `pairs` (2 ×
// num_pairs device int32): copy block src over block dst in K and V; a block is block_bytes bytes (block_size ×
// kv_dim × element size), so one kernel serves bf16 and FP8 caches.
void copy_kv_blocks(void* k_cache, void* v_cache, size_t layer_stride_bytes, int num_layers, const int32_t* pairs,
                    int num_pairs, size_t block_bytes, cudaStream_t stream);

// For each of num_layers layers (caches layer_stride elements apart) and each (src, dst) pair in `pairs`
// (2 × num_pairs device int32): copy block src over block dst in K and V. block_elems = block_size × kv_dim.
void copy_kv_blocks_bf16(uint16_t* k_cache, uint16_t* v_cache, size_t layer_stride, int num_layers,
                         const int32_t* pairs, int num_pairs, size_t block_elems, cudaStream_t stream);

}  // namespace qed::cuda
