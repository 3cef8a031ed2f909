#pragma once
// The per-step inputs of the CUDA forward (token ids, RoPE positions, KV slots, the attention metadata, logits rows,
// tree masks) packed into one host buffer, so a step costs one host-to-device copy from pinned memory and the
// kernels read sections of one device buffer. Host-only code: tested on the CPU.
#include <cstddef>
#include <cstdint>

#include "backend/backend.h"

namespace qed::cuda {

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
  size_t total_bytes = 0;
  int rows = 0;
  int seqs = 0;
  int logits_count = 0;
  int max_kv_len = 0;  // keys the longest-seeing row attends over
};

// Section sizes of a (validated) batch.
StepSections measure_step(const ForwardBatch& batch);

// Writes the sections of `batch` into dst (at least sections.total_bytes).
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

}  // namespace qed::cuda
