#pragma once
// The per-step inputs of the CUDA forward (token ids, RoPE positions, KV slots, the attention metadata, logits rows,
// tree masks) packed into one host buffer, so a step costs one host-to-device copy from pinned memory and the
// kernels read sections of one device buffer. Host-only code: tested on the CPU.
#include <cstddef>
#include <cstdint>

#include "backend/backend.h"

namespace qed::cuda {

// Which sequences' rows the tensor-core prefill kernel (prefill_attention_kernels.h) computes instead of the
// flash-decoding kernel: causal chunks (no tree mask) of at least prefill_min_rows new tokens, cut into tiles of
// prefill_tile_rows rows. prefill_min_rows 0 routes nothing there.
struct AttentionRouting {
  int prefill_min_rows = 0;
  int prefill_tile_rows = 64;
  // Sequences of 2..verify_max_rows new tokens that do not go to the prefill kernel go to the verify CTA
  // (paged_attention_verify: one CTA per sequence for all its rows) instead of the per-row one; 0 routes none.
  int verify_max_rows = 0;
};

bool routes_to_verify(const SequenceChunk& seq, const AttentionRouting& routing);

bool routes_to_prefill(const SequenceChunk& seq, const AttentionRouting& routing);

// Byte offsets of the sections (each 16-byte aligned; int32 arrays unless noted) and the batch's sizes.
struct StepSections {
  size_t token_ids = 0;         // [rows]
  size_t positions = 0;         // [rows]
  size_t slot_mapping = 0;      // [rows]: physical cache row of each new token
  size_t row_seq = 0;           // [rows]
  size_t seq_q_start = 0;       // [seqs]
  size_t seq_num_new = 0;       // [seqs]
  size_t seq_num_cached = 0;    // [seqs]
  size_t seq_block_offset = 0;  // [seqs]
  size_t seq_mask_offset = 0;   // [seqs]: -1 causal, else byte offset into the masks section
  size_t block_tables = 0;      // [sum of block-table lengths]
  size_t logits_rows = 0;       // [logits_count]: activation rows whose logits are wanted, in result order
  size_t masks = 0;             // uint8 [sum of n² over masked sequences]
  size_t decode_rows = 0;       // [decode_row_count]: rows the flash-decoding kernel computes, ascending
  size_t prefill_tiles = 0;     // [2 × prefill_tile_count]: (sequence, first new row) of each prefill-kernel tile
  size_t verify_seqs = 0;       // [verify_seq_count]: sequences the verify CTA computes (all their rows)
  size_t total_bytes = 0;
  int rows = 0;
  int seqs = 0;
  int logits_count = 0;
  int max_kv_len = 0;         // keys the longest-seeing row attends over
  AttentionRouting routing;   // as given to measure_step; pack_step routes the same way
  int decode_row_count = 0;   // == rows when nothing goes to the prefill kernel (the row list is then the identity)
  int decode_max_kv_len = 0;  // max_kv_len over the decode rows alone
  int prefill_tile_count = 0;
  int verify_seq_count = 0;
  int verify_max_rows = 0;    // most new rows of a verify sequence
  int verify_max_kv_len = 0;  // max_kv_len over the verify sequences
  // Graph verify steps: each slot's rows past its tokens are padding rows the verify CTA zeroes (0: none).
  int verify_slot_rows = 0;
};

// Section sizes of a (validated) batch whose attention is split between the kernels by `routing`.
StepSections measure_step(const ForwardBatch& batch, const AttentionRouting& routing = {});

// Writes the sections of `batch` into dst (at least sections.total_bytes). Prefill tiles are ordered by
// decreasing key count (the longest-running CTAs start first).
void pack_step(const ForwardBatch& batch, int block_size, const StepSections& sections, std::byte* dst);

// The fixed layout of a CUDA-graph decode step: `padded_rows` one-token sequences, each block table padded to
// `max_blocks_per_seq` entries, max_kv_len = max_kv_len (so the captured kernels' arguments never change), and
// logits_count = the real batch size (set by pack_decode_step's caller).
StepSections decode_graph_sections(int padded_rows, int max_blocks_per_seq, int max_kv_len);

// Whether `batch` can run as a graph decode step: every sequence one new token, causal, its last-token logits, no
// hidden states, at most `max_rows` sequences, block tables within max_blocks_per_seq.
bool is_graph_decode_step(const ForwardBatch& batch, int max_rows, int max_blocks_per_seq);

// Packs a graph decode step; rows past the batch are padding: token 0 at position 0, one new token over an empty
// prefix, its K/V written to (and read from) `scratch_block`, a block outside the engine's cache.
void pack_decode_step(const ForwardBatch& batch, int block_size, const StepSections& sections, int padded_rows,
                      int max_blocks_per_seq, int scratch_block, std::byte* dst);

// CUDA-graph verify steps (speculative decoding): every sequence brings 1..kMaxGraphVerifyRows new tokens (its last
// token and a draft chain or tree, or a short causal chunk), each sequence's rows padded to the step's widest.
constexpr int kMaxGraphVerifyRows = 8;

// The sequences of a graph step: the power of two >= `real`, at most `max_seqs`.
int graph_batch_size(int real, int max_seqs);
// The context a graph step is captured for: the power of two >= `longest` keys, from `min_bucket`, at most
// `max_kv_len`. The attention split is fixed per bucket, and each row splits its own keys, so a bucket up to 2x the
// real context costs no CTA more keys (attention_kernels.h).
int graph_context_bucket(int longest, int min_bucket, int max_kv_len);

// Rows per sequence of `batch` as a graph verify step (its longest chunk), or 0 when it cannot be one: a chunk of
// no or more than max_rows_per_seq tokens, more than max_seqs sequences, a block table past max_blocks_per_seq, or
// more than max_rows rows once padded (graph_batch_size x rows per sequence). Hidden states are allowed: the final
// norm and the lm_head run after the graph.
int graph_verify_rows(const ForwardBatch& batch, int max_seqs, int max_blocks_per_seq, int max_rows_per_seq,
                      int max_rows);

// The fixed layout of a CUDA-graph verify step: `padded_seqs` sequence slots of `rows_per_seq` rows each (slot q's
// rows start at q x rows_per_seq), sequence entries [0, padded_seqs) for the slots and one more per row
// (padded_seqs + r) for padding rows, block tables of max_blocks_per_seq entries per slot plus one scratch table, a
// rows_per_seq² mask per slot, and max_kv_len = max_kv_len. logits_count is the real one (set by the caller).
// verify_cta: the slots' rows go to the verify CTA (verify_seqs = the slots, which also zeroes their padding rows'
// attention output; those rows' results are never read) instead of the per-row one.
StepSections verify_graph_sections(int padded_seqs, int rows_per_seq, int max_blocks_per_seq, int max_kv_len,
                                   bool verify_cta = false);

// Packs a graph verify step. Sequence q keeps its own token count, mask (n² at offset q x rows_per_seq², or causal)
// and block table; the rows past its tokens, and every row of the slots past the batch, are padding: each its own
// one-token sequence (token 0 at position 0) over an empty prefix whose K/V goes to (and is read from)
// `scratch_block`, a block outside the engine's cache, so no real row sees a padding row's keys.
void pack_verify_step(const ForwardBatch& batch, int block_size, const StepSections& sections, int padded_seqs,
                      int rows_per_seq, int max_blocks_per_seq, int scratch_block, std::byte* dst);

}  // namespace qed::cuda
