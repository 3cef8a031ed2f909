#pragma once
// Tensor-core attention for causal chunks with many new rows (prefill, chunked prefill over cached blocks),
// FlashAttention-2 style: one CTA per (tile of up to 64 or 128 new rows of one sequence, query head); it
// streams the sequence's keys and values through the block table in tiles of 64 keys, S = Q·Kᵀ and O += P·V on
// mma.sync m16n8k16 (bf16 in, fp32 accumulate; sm_80 and later), an online softmax in fp32, and skips KV tiles
// past the tile's last row. Each KV tile is read once per 64 query rows instead of once per row, as the
// flash-decoding kernel (attention_kernels.h) does; decode rows and tree-masked chunks stay there.
//
// Rounding: P (the unnormalised softmax weights, in [0, 1]) is rounded to bf16 for the P·V product, as in every
// FlashAttention; the normaliser l is the fp32 sum of the unrounded weights. That moves each output element by at
// most 2⁻⁸ · Σᵢ wᵢ·|vᵢ| (w the exact softmax weights) besides the final bf16 rounding; the test derives its
// tolerance from that bound.
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/attention_kernels.h"

namespace qed::cuda {

// How the rows are cut into CTAs: `rows` new rows (query tokens) of one sequence per CTA, over `warps` warps of
// rows / warps rows each (16 or 32: one or two m16 slices). Compiled: 64 rows / 4 warps (Q fragments in
// registers, 2 CTAs per SM at head_dim 128), 128 / 8 (half the K/V tile loads per row, 1 CTA per SM) and 128 / 4
// (FlashAttention-2's shape: every K/V fragment read from shared memory feeds two MMAs). kPrefillTiling is the
// backend's choice.
struct PrefillTiling {
  int rows = 64;
  int warps = 4;
};
constexpr bool prefill_tiling_supported(PrefillTiling tiling) {
  return (tiling.rows == 64 && tiling.warps == 4) || (tiling.rows == 128 && (tiling.warps == 8 || tiling.warps == 4));
}
// The backend's choice per step (prefill_tiling_for): 128 rows / 4 warps for long chunks, 64 / 4 for short ones.
// Measured on an H200 (bench_prefill_attention, 14B shape, 2026-12-02; ms a layer, 64/4 vs 128/4 vs 128/8):
// prompt 1024 0.115 / 0.103 / 0.101, 8192 5.333 / 3.578 / 4.140; a 512-row chunk over 4096 cached keys 0.522 /
// 0.414, 2048 over 6144 2.383 / 1.882; but a 64-row chunk over 2048 0.136 / 0.171 (half of each 128-row tile
// empty).
constexpr PrefillTiling kPrefillTiling{64, 4};
constexpr PrefillTiling kPrefillTilingLong{128, 4};
constexpr int kPrefillLongChunkRows = 256;

// The tiling for a step whose longest chunk on the prefill kernel has `longest_chunk` new rows.
constexpr PrefillTiling prefill_tiling_for(int longest_chunk) {
  return longest_chunk >= kPrefillLongChunkRows ? kPrefillTilingLong : kPrefillTiling;
}
// The tiling of the two above whose tiles have `tile_rows` rows (AttentionRouting::prefill_tile_rows).
constexpr PrefillTiling prefill_tiling_of(int tile_rows) {
  return tile_rows == kPrefillTilingLong.rows ? kPrefillTilingLong : kPrefillTiling;
}

// Head dims the kernel is compiled for; other head dims take paged_attention_bf16.
constexpr bool prefill_attention_supports(int head_dim) {
  return head_dim == 64 || head_dim == 128;
}

// Attention of the rows named by `tiles` (device, 2 int32 per tile: sequence index, first new row of the tile;
// the tile covers new rows first .. min(first + tiling.rows, n) - 1 of that sequence), causal: new row i of a
// sequence sees its cached prefix and new rows 0..i. Only the per-sequence arrays and block_tables of `batch` are
// read (seq_q_start, seq_num_new, seq_num_cached, seq_block_offset); its masks are ignored, so tree-masked
// sequences must not be in `tiles`. q, cache and out as paged_attention. An FP8 cache's tiles are staged in shared
// memory by cp.async as codes (the same overlap of loads and MMAs as bf16) and converted there to bf16 code values,
// k_scale folded into the softmax scale, v_scale into the output.
void prefill_attention(const uint16_t* q, int q_stride, const KvCacheView& cache, const AttentionBatch& batch,
                       const int32_t* tiles, int num_tiles, PrefillTiling tiling, const AttentionShape& shape,
                       uint16_t* out, cudaStream_t stream);
// The same over bf16 caches.
void prefill_attention_bf16(const uint16_t* q, int q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                            const AttentionBatch& batch, const int32_t* tiles, int num_tiles, PrefillTiling tiling,
                            const AttentionShape& shape, uint16_t* out, cudaStream_t stream);

}  // namespace qed::cuda
