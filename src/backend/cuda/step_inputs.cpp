#include "backend/cuda/step_inputs.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace qed::cuda {
namespace {

size_t align16(size_t bytes) {
  return (bytes + 15) / 16 * 16;
}

int32_t* ints(std::byte* base, size_t offset) {
  return reinterpret_cast<int32_t*>(base + offset);
}

// Places the sections one after another, 16-byte aligned: the per-row ones sized by s.rows, the per-sequence ones by
// s.seqs, logits_rows by s.logits_count, the rest by the entry counts given.
void place_sections(StepSections& s, size_t table_entries, size_t mask_bytes, size_t decode_row_entries,
                    size_t prefill_tile_entries, size_t verify_seq_entries = 0) {
  size_t offset = 0;
  auto section = [&](size_t bytes) {
    const size_t at = offset;
    offset += align16(bytes);
    return at;
  };
  const size_t row_bytes = size_t(s.rows) * sizeof(int32_t);
  const size_t seq_bytes = size_t(s.seqs) * sizeof(int32_t);
  s.token_ids = section(row_bytes);
  s.positions = section(row_bytes);
  s.slot_mapping = section(row_bytes);
  s.row_seq = section(row_bytes);
  s.seq_q_start = section(seq_bytes);
  s.seq_num_new = section(seq_bytes);
  s.seq_num_cached = section(seq_bytes);
  s.seq_block_offset = section(seq_bytes);
  s.seq_mask_offset = section(seq_bytes);
  s.block_tables = section(table_entries * sizeof(int32_t));
  s.logits_rows = section(size_t(s.logits_count) * sizeof(int32_t));
  s.masks = section(mask_bytes);
  s.decode_rows = section(decode_row_entries * sizeof(int32_t));
  s.prefill_tiles = section(prefill_tile_entries * 2 * sizeof(int32_t));
  s.verify_seqs = section(verify_seq_entries * sizeof(int32_t));
  s.total_bytes = offset;
}

// The inputs of new token i of `seq` (sequence entry q) at activation row `row`.
void pack_new_token(const SequenceChunk& seq, int32_t i, int32_t q, int32_t row, int block_size, const StepSections& s,
                    std::byte* dst) {
  const int32_t slot = seq.num_cached + i;
  ints(dst, s.token_ids)[row] = seq.tokens[size_t(i)];
  ints(dst, s.positions)[row] = seq.positions.empty() ? slot : seq.positions[size_t(i)];
  ints(dst, s.slot_mapping)[row] = seq.block_table[size_t(slot / block_size)] * block_size + slot % block_size;
  ints(dst, s.row_seq)[row] = q;
}

// The logits rows of `seq`, whose first new token is activation row `first`, from logits_rows[at]; returns the next at.
int32_t pack_logits_rows(const SequenceChunk& seq, int32_t first, const StepSections& s, int32_t at, std::byte* dst) {
  if (seq.logits_indices.empty()) {
    ints(dst, s.logits_rows)[at++] = first + int32_t(seq.tokens.size()) - 1;
  } else {
    for (int32_t index : seq.logits_indices) ints(dst, s.logits_rows)[at++] = first + index;
  }
  return at;
}

}  // namespace

bool routes_to_prefill(const SequenceChunk& seq, const AttentionRouting& routing) {
  return routing.prefill_min_rows > 0 && routing.prefill_tile_rows > 0 && seq.attention_mask.empty() &&
         int(seq.tokens.size()) >= routing.prefill_min_rows;
}

bool routes_to_verify(const SequenceChunk& seq, const AttentionRouting& routing) {
  const int n = int(seq.tokens.size());
  return routing.verify_max_rows >= 2 && n >= 2 && n <= routing.verify_max_rows && !routes_to_prefill(seq, routing);
}

StepSections measure_step(const ForwardBatch& batch, const AttentionRouting& routing) {
  StepSections s;
  s.routing = routing;
  size_t table_entries = 0, mask_bytes = 0;
  for (const SequenceChunk& seq : batch.sequences) {
    const int n = int(seq.tokens.size());
    s.rows += n;
    s.logits_count += seq.logits_indices.empty() ? 1 : int(seq.logits_indices.size());
    table_entries += seq.block_table.size();
    mask_bytes += seq.attention_mask.size();
    s.max_kv_len = std::max(s.max_kv_len, seq.num_cached + n);
    if (routes_to_prefill(seq, routing)) {
      s.prefill_tile_count += (n + routing.prefill_tile_rows - 1) / routing.prefill_tile_rows;
    } else if (routes_to_verify(seq, routing)) {
      ++s.verify_seq_count;
      s.verify_max_rows = std::max(s.verify_max_rows, n);
      s.verify_max_kv_len = std::max(s.verify_max_kv_len, seq.num_cached + n);
    } else {
      s.decode_row_count += n;
      s.decode_max_kv_len = std::max(s.decode_max_kv_len, seq.num_cached + n);
    }
  }
  s.seqs = int(batch.sequences.size());
  place_sections(s, table_entries, mask_bytes, size_t(s.decode_row_count), size_t(s.prefill_tile_count),
                 size_t(s.verify_seq_count));
  return s;
}

void pack_step(const ForwardBatch& batch, int block_size, const StepSections& s, std::byte* dst) {
  struct Tile {
    int32_t keys, seq, first;  // keys: what the tile's last row sees
  };
  std::vector<Tile> tiles;
  tiles.reserve(size_t(s.prefill_tile_count));
  int32_t row = 0, table_at = 0, logits_at = 0, mask_at = 0, decode_at = 0, verify_at = 0;
  for (size_t q = 0; q < batch.sequences.size(); ++q) {
    const SequenceChunk& seq = batch.sequences[q];
    const int32_t n = int32_t(seq.tokens.size());
    if (routes_to_prefill(seq, s.routing)) {
      for (int32_t first = 0; first < n; first += s.routing.prefill_tile_rows) {
        tiles.push_back({seq.num_cached + std::min(n, first + s.routing.prefill_tile_rows), int32_t(q), first});
      }
    } else if (routes_to_verify(seq, s.routing)) {
      ints(dst, s.verify_seqs)[verify_at++] = int32_t(q);
    } else {
      for (int32_t i = 0; i < n; ++i) ints(dst, s.decode_rows)[decode_at++] = row + i;
    }
    ints(dst, s.seq_q_start)[q] = row;
    ints(dst, s.seq_num_new)[q] = n;
    ints(dst, s.seq_num_cached)[q] = seq.num_cached;
    ints(dst, s.seq_block_offset)[q] = table_at;
    ints(dst, s.seq_mask_offset)[q] = seq.attention_mask.empty() ? -1 : mask_at;
    for (int32_t i = 0; i < n; ++i) pack_new_token(seq, i, int32_t(q), row + i, block_size, s, dst);
    std::memcpy(dst + s.block_tables + size_t(table_at) * sizeof(int32_t), seq.block_table.data(),
                seq.block_table.size() * sizeof(int32_t));
    logits_at = pack_logits_rows(seq, row, s, logits_at, dst);
    if (!seq.attention_mask.empty()) {
      std::memcpy(dst + s.masks + size_t(mask_at), seq.attention_mask.data(), seq.attention_mask.size());
    }
    mask_at += int32_t(seq.attention_mask.size());
    table_at += int32_t(seq.block_table.size());
    row += n;
  }
  std::stable_sort(tiles.begin(), tiles.end(), [](const Tile& a, const Tile& b) { return a.keys > b.keys; });
  for (size_t t = 0; t < tiles.size(); ++t) {
    ints(dst, s.prefill_tiles)[2 * t] = tiles[t].seq;
    ints(dst, s.prefill_tiles)[2 * t + 1] = tiles[t].first;
  }
}

StepSections decode_graph_sections(int padded_rows, int max_blocks_per_seq, int max_kv_len) {
  StepSections s;
  s.rows = padded_rows;
  s.seqs = padded_rows;
  s.logits_count = padded_rows;
  s.max_kv_len = max_kv_len;
  // No masks; every row is a decode row, and run_layers passes no row list for them.
  place_sections(s, size_t(padded_rows) * size_t(max_blocks_per_seq), 0, 0, 0);
  s.decode_row_count = padded_rows;
  s.decode_max_kv_len = max_kv_len;
  return s;
}

bool is_graph_decode_step(const ForwardBatch& batch, int max_rows, int max_blocks_per_seq) {
  if (batch.want_hidden || batch.sequences.empty() || int(batch.sequences.size()) > max_rows) return false;
  for (const SequenceChunk& seq : batch.sequences) {
    if (seq.tokens.size() != 1 || !seq.attention_mask.empty() || !seq.logits_indices.empty()) return false;
    if (int(seq.block_table.size()) > max_blocks_per_seq) return false;
  }
  return true;
}

void pack_decode_step(const ForwardBatch& batch, int block_size, const StepSections& s, int padded_rows,
                      int max_blocks_per_seq, int scratch_block, std::byte* dst) {
  const int real = int(batch.sequences.size());
  for (int r = 0; r < padded_rows; ++r) {
    const bool padding = r >= real;
    const SequenceChunk* seq = padding ? nullptr : &batch.sequences[size_t(r)];
    const int32_t cached = padding ? 0 : seq->num_cached;
    ints(dst, s.token_ids)[r] = padding ? 0 : seq->tokens[0];
    ints(dst, s.positions)[r] = padding ? 0 : (seq->positions.empty() ? cached : seq->positions[0]);
    ints(dst, s.slot_mapping)[r] =
        padding ? scratch_block * block_size
                : seq->block_table[size_t(cached / block_size)] * block_size + cached % block_size;
    ints(dst, s.row_seq)[r] = r;
    ints(dst, s.seq_q_start)[r] = r;
    ints(dst, s.seq_num_new)[r] = 1;
    ints(dst, s.seq_num_cached)[r] = cached;
    ints(dst, s.seq_block_offset)[r] = r * max_blocks_per_seq;
    ints(dst, s.seq_mask_offset)[r] = -1;
    int32_t* table = ints(dst, s.block_tables) + size_t(r) * max_blocks_per_seq;
    if (padding) {
      table[0] = scratch_block;
    } else {
      std::memcpy(table, seq->block_table.data(), seq->block_table.size() * sizeof(int32_t));
    }
    ints(dst, s.logits_rows)[r] = r;
  }
}

int graph_batch_size(int real, int max_seqs) {
  int padded = 1;
  while (padded < real) padded *= 2;
  return std::min(padded, max_seqs);
}

int graph_context_bucket(int longest, int min_bucket, int max_kv_len) {
  int bucket = min_bucket;
  while (bucket < longest) bucket *= 2;
  return std::min(bucket, max_kv_len);
}

int graph_verify_rows(const ForwardBatch& batch, int max_seqs, int max_blocks_per_seq, int max_rows_per_seq,
                      int max_rows) {
  const int real = int(batch.sequences.size());
  if (real == 0 || real > max_seqs) return 0;
  int rows_per_seq = 0;
  for (const SequenceChunk& seq : batch.sequences) {
    const int n = int(seq.tokens.size());
    if (n == 0 || n > max_rows_per_seq || int(seq.block_table.size()) > max_blocks_per_seq) return 0;
    rows_per_seq = std::max(rows_per_seq, n);
  }
  if (size_t(graph_batch_size(real, max_seqs)) * size_t(rows_per_seq) > size_t(std::max(max_rows, 0))) return 0;
  return rows_per_seq;
}

StepSections verify_graph_sections(int padded_seqs, int rows_per_seq, int max_blocks_per_seq, int max_kv_len,
                                   bool verify_cta) {
  StepSections s;
  s.rows = padded_seqs * rows_per_seq;
  s.seqs = padded_seqs + s.rows;
  s.logits_count = s.rows;
  s.max_kv_len = max_kv_len;
  // One table per slot plus the scratch table; the rows go to the verify CTA (one entry per slot) when verify_cta,
  // else all to the flash-decoding kernel, and run_layers passes no row list for them.
  place_sections(s, size_t(padded_seqs) * size_t(max_blocks_per_seq) + 1,
                 size_t(padded_seqs) * size_t(rows_per_seq) * size_t(rows_per_seq), 0, 0,
                 verify_cta ? size_t(padded_seqs) : 0);
  if (verify_cta) {
    s.verify_seq_count = padded_seqs;
    s.verify_max_rows = rows_per_seq;
    s.verify_max_kv_len = max_kv_len;
    s.verify_slot_rows = rows_per_seq;
  } else {
    s.decode_row_count = s.rows;
    s.decode_max_kv_len = max_kv_len;
  }
  return s;
}

void pack_verify_step(const ForwardBatch& batch, int block_size, const StepSections& s, int padded_seqs,
                      int rows_per_seq, int max_blocks_per_seq, int scratch_block, std::byte* dst) {
  const int real = int(batch.sequences.size());
  const int32_t scratch_table = padded_seqs * max_blocks_per_seq;
  const int32_t mask_bytes = rows_per_seq * rows_per_seq;
  ints(dst, s.block_tables)[scratch_table] = scratch_block;
  for (int32_t q = 0; q < s.verify_seq_count; ++q) ints(dst, s.verify_seqs)[q] = q;
  auto padding_sequence = [&](int32_t entry, int32_t first_row) {
    ints(dst, s.seq_q_start)[entry] = first_row;
    ints(dst, s.seq_num_new)[entry] = 1;
    ints(dst, s.seq_num_cached)[entry] = 0;
    ints(dst, s.seq_block_offset)[entry] = scratch_table;
    ints(dst, s.seq_mask_offset)[entry] = -1;
  };
  int32_t logits_at = 0;
  for (int32_t q = 0; q < padded_seqs; ++q) {
    const SequenceChunk* seq = q < real ? &batch.sequences[size_t(q)] : nullptr;
    const int32_t n = seq ? int32_t(seq->tokens.size()) : 0;
    const int32_t first = q * rows_per_seq;
    if (seq) {
      ints(dst, s.seq_q_start)[q] = first;
      ints(dst, s.seq_num_new)[q] = n;
      ints(dst, s.seq_num_cached)[q] = seq->num_cached;
      ints(dst, s.seq_block_offset)[q] = q * max_blocks_per_seq;
      ints(dst, s.seq_mask_offset)[q] = seq->attention_mask.empty() ? -1 : q * mask_bytes;
      std::memcpy(dst + s.block_tables + size_t(q) * max_blocks_per_seq * sizeof(int32_t), seq->block_table.data(),
                  seq->block_table.size() * sizeof(int32_t));
      if (!seq->attention_mask.empty()) {
        std::memcpy(dst + s.masks + size_t(q) * mask_bytes, seq->attention_mask.data(), seq->attention_mask.size());
      }
      logits_at = pack_logits_rows(*seq, first, s, logits_at, dst);
    } else {
      padding_sequence(q, first);  // referenced by no row; kept well-formed
    }
    for (int32_t i = 0; i < rows_per_seq; ++i) {
      const int32_t row = first + i;
      if (i < n) {
        pack_new_token(*seq, i, q, row, block_size, s, dst);
      } else {
        ints(dst, s.token_ids)[row] = 0;
        ints(dst, s.positions)[row] = 0;
        ints(dst, s.slot_mapping)[row] = scratch_block * block_size;
        ints(dst, s.row_seq)[row] = padded_seqs + row;
      }
      padding_sequence(padded_seqs + row, row);
    }
  }
}

}  // namespace qed::cuda
