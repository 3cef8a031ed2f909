#pragma once
// Paged KV cache writes and block copies. One layer's K (or V) cache is [num_blocks × block_size] rows of
// kv_dim = num_kv_heads × head_dim bf16, the layout of cpu::PagedKv; a "slot" below is a physical row,
// block_table[s / block_size] * block_size + s % block_size, computed on the host.
#include <cuda_runtime.h>

#include <cstdint>

namespace qed::cuda {

// k_cache[slot_mapping[r]] = k[r], v_cache[...] = v[r] for r < rows (cpu::write_kv); source rows are
// `src_stride` elements apart (k and v live inside the fused qkv row).
void write_kv_bf16(const uint16_t* k, const uint16_t* v, int src_stride, const int32_t* slot_mapping, uint16_t* k_cache,
                   uint16_t* v_cache, int rows, int kv_dim, cudaStream_t stream);

// For each of num_layers layers (caches layer_stride elements apart) and each (src, dst) pair in `pairs`
// (2 × num_pairs device int32): copy block src over block dst in K and V. block_elems = block_size × kv_dim.
void copy_kv_blocks_bf16(uint16_t* k_cache, uint16_t* v_cache, size_t layer_stride, int num_layers,
                         const int32_t* pairs, int num_pairs, size_t block_elems, cudaStream_t stream);

}  // namespace qed::cuda
