#pragma once
// Paged attention for every kind of chunk the engine sends in one launch: prefill and chunked prefill (causal
// over the new tokens, the cached prefix always visible), decode (one token over a long context) and tree
// verification (a custom mask among the new tokens). cpu::attention is the reference, query row by query row.
//
// Work split (flash-decoding): one CTA per (query row, KV head and a group of up to 8 of its query heads, KV
// partition). Each CTA streams its partition's keys once for all the query heads that share the KV head (GQA), with
// an online softmax in fp32; with more than one partition, partial (max, sum, accumulator) triples go to a
// scratch buffer, merged by the last CTA of each (row, KV head group) to finish (merge counters given) or by a
// second kernel. Each row splits its own keys into the launch's partitions (so a
// CUDA graph captured for a longer context bucket does no more work per CTA). Head dims 64 and 128 run on tensor
// cores (mma.sync: the GQA group is the M dimension, attention_mma_tile.cuh); 16, 32 and 256 on CUDA cores.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace qed::cuda {

// Per-step metadata, all device arrays (packed by the runner into one upload).
struct AttentionBatch {
  const int32_t* row_seq = nullptr;           // [rows]: sequence of each query row
  const int32_t* seq_q_start = nullptr;       // [seqs]: first query row of the sequence
  const int32_t* seq_num_new = nullptr;       // [seqs]: n, the sequence's new tokens (its query rows)
  const int32_t* seq_num_cached = nullptr;    // [seqs]: cached prefix length; new token j sits at slot num_cached + j
  const int32_t* seq_block_offset = nullptr;  // [seqs]: where the sequence's block table starts in block_tables
  const int32_t* block_tables = nullptr;      // flat
  const int32_t* seq_mask_offset = nullptr;   // [seqs]: -1 causal, else offset of its n × n mask in masks
  const uint8_t* masks = nullptr;
  // [rows]: the query rows this launch computes, when the step's other rows go to prefill_attention_bf16; null:
  // rows 0 .. rows - 1.
  const int32_t* row_list = nullptr;
  int rows = 0;        // rows this launch computes
  int max_kv_len = 0;  // host-computed: max over those rows of the keys a row can see (num_cached + its new-token span)
};

struct AttentionShape {
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
  float scale = 1.0f;
};

// One layer's K and V caches ([slots][num_kv_heads][head_dim]) as the attention kernels read them: bf16, or FP8
// E4M3 codes standing for code × k_scale (v_scale), vLLM's per-tensor FP8 KV cache.
struct KvCacheView {
  const void* k = nullptr;
  const void* v = nullptr;
  bool fp8 = false;
  float k_scale = 1.0f, v_scale = 1.0f;
};

// Which flash-decoding CTA runs at head_dim 64/128 (other head dims always take the CUDA-core one): the tensor-core
// kernel loading K/V into registers (the default, measured), the same kernel streaming them through a cp.async
// shared-memory ring per warp (more bytes in flight; written, GPU-tested, measured against the default by
// bench_decode_attention), or the CUDA-core kernel (A/B).
enum class DecodeKernel : uint8_t { TensorCores, TensorCoresPipelined, CudaCores };

// Floats of scratch that attention_partitions() may use per (row, head, partition): the head_dim values, the max
// and the sum, padded to a multiple of 4 so every partial starts 16-byte aligned (the fused merge's float4 loads).
constexpr size_t attention_partial_floats(int head_dim) {
  return size_t(head_dim) + 4;
}

// How many KV partitions a launch splits each row's keys into: enough CTAs to fill `num_sms` multiprocessors
// several times over, no partition under 64 keys (of max_kv_len), and no more than `partial_capacity_floats` of
// scratch.
int attention_partitions(const AttentionBatch& batch, const AttentionShape& shape, int num_sms,
                         size_t partial_capacity_floats);

// How many merge counters paged_attention() may use for launches of up to `rows` rows: a zero-filled device
// array of that many uint32 (zero again after every launch) lets the last CTA of each (row, KV head group) merge the
// split-K partials itself, instead of a second kernel (up to 64 partitions; more still take the merge kernel).
size_t attention_merge_counters(int rows, const AttentionShape& shape);

// out[r] (rows × num_heads × head_dim, contiguous) = attention of query row r, for r = row_list[i] (or i),
// i < batch.rows; other rows of out are left as they are. q rows are q_stride elements apart (heads × head_dim at
// the row start); k_cache/v_cache are one layer's caches ([slots][num_kv_heads][head_dim]). `partials` holds at
// least batch.rows × num_heads × partitions × attention_partial_floats(head_dim) floats when partitions > 1 (unused
// otherwise). `kernel` picks the CTA at head_dim 64/128 (benchmarks and tests). out_fp8 (optional, laid out as out):
// also the E4M3 codes of the computed rows of out / *out_fp8_scale, bit-identical to quantize_fp8_bf16 on them (the
// input of a static-scale FP8 o_proj, so no quantization pass runs).
void paged_attention(const uint16_t* q, int q_stride, const KvCacheView& cache, const AttentionBatch& batch,
                     const AttentionShape& shape, int partitions, float* partials, uint16_t* out, cudaStream_t stream,
                     DecodeKernel kernel = DecodeKernel::TensorCores, uint8_t* out_fp8 = nullptr,
                     const float* out_fp8_scale = nullptr, uint32_t* merge_counters = nullptr);
// The same over bf16 caches.
void paged_attention_bf16(const uint16_t* q, int q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                          const AttentionBatch& batch, const AttentionShape& shape, int partitions, float* partials,
                          uint16_t* out, cudaStream_t stream, DecodeKernel kernel = DecodeKernel::TensorCores);

// Verify steps (speculative decoding): one CTA per (sequence, KV head, KV partition) for all of the sequence's new
// rows, the rows x the GQA group's query heads as the MMA's M dimension (attention_verify_tile.cuh), so each
// sequence's K/V is read once per step instead of once per row. Same results, partials layout, merge, FP8 cache and
// E4M3 output as paged_attention.

// Whether sequences of up to max_rows_per_seq new rows can take paged_attention_verify: head_dim 64 or 128, a GQA
// group of at most 8 query heads per KV head, rows x group <= 64 (four m16 tiles).
bool attention_verify_supports(const AttentionShape& shape, int max_rows_per_seq);

// QED_VERIFY_ATTENTION=0 turns the verify CTA off (the backend then sends verify rows to paged_attention; A/B).
bool verify_attention_enabled();

// Partitions for a verify launch of `seqs` sequences over at most max_kv_len keys, its partials indexed by the
// step's rows (step_rows of them), as attention_partitions.
int attention_verify_partitions(int seqs, int max_kv_len, int step_rows, const AttentionShape& shape, int num_sms,
                                size_t partial_capacity_floats);

// out rows of the sequences seq_list[0 .. seq_count) (a device array; each with 1..max_rows_per_seq new rows, all
// of them computed) = their attention; other rows are left as they are. batch supplies the step's sequence arrays
// (row_list and rows are not read). `partials` holds step_rows x num_heads x partitions x
// attention_partial_floats(head_dim) floats when partitions > 1, merge_counters (optional) at least
// attention_merge_counters(step_rows, shape) zeroed counters. The grid is fixed by (seq_count, partitions), so a
// CUDA graph can capture it. slot_rows > 0 (graph verify steps): rows first + n .. first + slot_rows - 1 of each
// listed sequence are padding rows, written as zeros.
void paged_attention_verify(const uint16_t* q, int q_stride, const KvCacheView& cache, const AttentionBatch& batch,
                            const int32_t* seq_list, int seq_count, int max_rows_per_seq, const AttentionShape& shape,
                            int partitions, float* partials, uint16_t* out, cudaStream_t stream,
                            uint8_t* out_fp8 = nullptr, const float* out_fp8_scale = nullptr,
                            uint32_t* merge_counters = nullptr, int slot_rows = 0);

}  // namespace qed::cuda
