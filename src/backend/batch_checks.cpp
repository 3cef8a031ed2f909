#include "backend/batch_checks.h"

#include "core/error.h"

namespace qed {

void validate_forward_batch(const ForwardBatch& batch, int vocab_size, const KvCacheLayout& layout) {
  if (batch.sequences.empty()) fail("forward: empty batch");
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const SequenceChunk& seq = batch.sequences[s];
    const size_t n = seq.tokens.size();
    if (n == 0) fail("forward: sequence {} has no tokens", s);
    if (seq.num_cached < 0) fail("forward: sequence {} has num_cached {}", s, seq.num_cached);
    for (int32_t token : seq.tokens) {
      if (token < 0 || token >= vocab_size) {
        fail("forward: sequence {}: token id {} outside the vocabulary [0, {})", s, token, vocab_size);
      }
    }
    if (!seq.positions.empty() && seq.positions.size() != n) {
      fail("forward: sequence {}: {} positions for {} tokens", s, seq.positions.size(), n);
    }
    for (int32_t position : seq.positions) {
      if (position < 0) fail("forward: sequence {}: negative position {}", s, position);
    }
    const size_t slots = size_t(seq.num_cached) + n;
    if (seq.block_table.size() * size_t(layout.block_size) < slots) {
      fail("forward: sequence {}: block table of {} blocks cannot hold {} slots", s, seq.block_table.size(), slots);
    }
    for (int32_t block : seq.block_table) {
      if (block < 0 || block >= layout.num_blocks) {
        fail("forward: sequence {}: block {} outside the cache [0, {})", s, block, layout.num_blocks);
      }
    }
    if (!seq.attention_mask.empty() && seq.attention_mask.size() != n * n) {
      fail("forward: sequence {}: attention mask has {} entries, expected {}", s, seq.attention_mask.size(), n * n);
    }
    for (int32_t index : seq.logits_indices) {
      if (index < 0 || size_t(index) >= n) fail("forward: sequence {}: logits index {} outside [0, {})", s, index, n);
    }
  }
}

void validate_block_pairs(std::span<const std::pair<int32_t, int32_t>> src_dst, int num_blocks) {
  for (const auto& [src, dst] : src_dst) {
    if (src < 0 || src >= num_blocks || dst < 0 || dst >= num_blocks) {
      fail("copy_kv_blocks: block pair ({}, {}) outside the cache [0, {})", src, dst, num_blocks);
    }
  }
}

}  // namespace qed
