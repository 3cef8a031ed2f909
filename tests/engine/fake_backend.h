#pragma once
// A backend whose "KV cache" stores (token id, position) per slot and whose logits are a hash of everything each
// row can see through its block table: cached slots plus the chunk's own causal prefix (or the tokens its
// attention_mask row names, for draft trees; a tree's rows only see earlier chunk tokens). Any paging, prefix-cache,
// copy-on-write or position bug changes what a row sees and so changes the generated tokens; reads of slots that
// were never written throw.
#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace qed::testing {

class FakeBackend final : public Backend {
 public:
  FakeBackend(int vocab_size, int block_size, int num_blocks, int eos_token_id = -1);

  std::string name() const override { return "fake"; }
  const ModelConfig& config() const override { return config_; }
  KvCacheLayout kv_layout() const override { return layout_; }
  void forward(const ForwardBatch& batch, ForwardResult& result) override;
  void copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) override;

  // The greedy next token after `context` at positions 0..n-1, computed without the cache: what a decode of that
  // context yields, so test drafters can propose tokens that will be accepted.
  int32_t greedy_token(std::span<const int32_t> context) const;

  int64_t forwarded_tokens() const { return forwarded_tokens_; }
  int64_t forward_calls() const { return forward_calls_; }
  int max_sequences_in_a_batch() const { return max_sequences_; }
  int64_t copied_blocks() const { return copied_blocks_; }

 private:
  struct Slot {
    int32_t token = -1;
    int32_t position = -1;
  };
  Slot& slot(const SequenceChunk& chunk, int32_t index);

  ModelConfig config_;
  KvCacheLayout layout_;
  std::vector<Slot> kv_;
  int64_t forwarded_tokens_ = 0;
  int64_t forward_calls_ = 0;
  int max_sequences_ = 0;
  int64_t copied_blocks_ = 0;
};

}  // namespace qed::testing
