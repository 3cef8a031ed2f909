#include "fake_backend.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace qed::testing {
namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
  return (h ^ (h >> 27)) * 0x94D049BB133111EBull;
}

float logit(uint64_t context_hash, size_t token) {
  const uint64_t r = mix(context_hash, token);
  return static_cast<float>(r >> 40) / static_cast<float>(1 << 24) * 8.0f - 4.0f;
}

}  // namespace

int32_t FakeBackend::greedy_token(std::span<const int32_t> context) const {
  uint64_t h = 0x1234;
  for (size_t i = 0; i < context.size(); ++i) {
    h = mix(mix(h, static_cast<uint64_t>(context[i])), static_cast<uint64_t>(i));
  }
  int32_t best = 0;
  for (size_t v = 1; v < static_cast<size_t>(config_.vocab_size); ++v) {
    if (logit(h, v) > logit(h, static_cast<size_t>(best))) best = static_cast<int32_t>(v);
  }
  return best;
}

FakeBackend::FakeBackend(int vocab_size, int block_size, int num_blocks, int eos_token_id) {
  config_.model_type = "fake";
  config_.vocab_size = vocab_size;
  config_.num_layers = 1;
  config_.num_heads = 1;
  config_.num_kv_heads = 1;
  config_.head_dim = 1;
  config_.hidden_size = 1;
  config_.max_position_embeddings = 1 << 20;
  if (eos_token_id >= 0) config_.eos_token_ids = {eos_token_id};
  layout_.block_size = block_size;
  layout_.num_blocks = num_blocks;
  kv_.resize(static_cast<size_t>(block_size) * static_cast<size_t>(num_blocks));
}

FakeBackend::Slot& FakeBackend::slot(const SequenceChunk& chunk, int32_t index) {
  const size_t logical_block = static_cast<size_t>(index / layout_.block_size);
  if (logical_block >= chunk.block_table.size()) {
    throw std::logic_error("fake backend: slot " + std::to_string(index) + " beyond the block table");
  }
  const int32_t block = chunk.block_table[logical_block];
  if (block < 0 || block >= layout_.num_blocks) {
    throw std::logic_error("fake backend: block id " + std::to_string(block) + " out of range");
  }
  return kv_[static_cast<size_t>(block) * static_cast<size_t>(layout_.block_size) +
             static_cast<size_t>(index % layout_.block_size)];
}

void FakeBackend::forward(const ForwardBatch& batch, ForwardResult& result) {
  ++forward_calls_;
  max_sequences_ = std::max(max_sequences_, static_cast<int>(batch.sequences.size()));
  const size_t vocab = static_cast<size_t>(config_.vocab_size);
  result.rows = 0;
  result.logits.clear();
  for (const SequenceChunk& chunk : batch.sequences) {
    const int32_t n = static_cast<int32_t>(chunk.tokens.size());
    forwarded_tokens_ += n;
    for (int32_t i = 0; i < n; ++i) {
      const int32_t position = chunk.positions.empty() ? chunk.num_cached + i : chunk.positions[static_cast<size_t>(i)];
      slot(chunk, chunk.num_cached + i) = {chunk.tokens[static_cast<size_t>(i)], position};
    }
    std::vector<int32_t> rows = chunk.logits_indices;
    if (rows.empty()) rows.push_back(n - 1);
    for (int32_t row : rows) {
      uint64_t h = 0x1234;
      for (int32_t s = 0; s <= chunk.num_cached + row; ++s) {
        const int32_t j = s - chunk.num_cached;  // index in the chunk; < 0 for cached slots
        if (j >= 0 && !chunk.attention_mask.empty() &&
            chunk.attention_mask[static_cast<size_t>(row) * static_cast<size_t>(n) + static_cast<size_t>(j)] == 0) {
          continue;
        }
        const Slot& visible = slot(chunk, s);
        if (visible.token < 0) throw std::logic_error("fake backend: read of unwritten KV slot");
        h = mix(mix(h, static_cast<uint64_t>(visible.token)), static_cast<uint64_t>(visible.position));
      }
      for (size_t v = 0; v < vocab; ++v) result.logits.push_back(logit(h, v));
      ++result.rows;
    }
  }
}

void FakeBackend::copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) {
  const size_t bs = static_cast<size_t>(layout_.block_size);
  for (const auto& [src, dst] : src_dst) {
    std::copy_n(kv_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(src) * bs), bs,
                kv_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(dst) * bs));
    ++copied_blocks_;
  }
}

}  // namespace qed::testing
