#pragma once
// Bookkeeping of the paged KV cache (the backend holds the memory): which physical blocks each sequence uses,
// reference counts for blocks shared by forks and by the prefix cache, copy-on-write before a shared block is
// written, and an LRU pool of free blocks that still hold a reusable full-block prefix.
//
// Prefix caching: a full block is identified by a chained hash of (hash of the previous block, its tokens), so a
// hit on block i implies the whole prefix [0, (i+1)·block_size) matches. Tokens are stored beside the hash and
// compared on lookup, so a 64-bit collision can never hand out wrong K/V.
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/sequence.h"
#include "model/model_config.h"

namespace qed {

// Bytes of K and V for one block of `block_size` tokens across all layers.
size_t kv_block_bytes(const ModelConfig& config, int block_size, size_t dtype_bytes);
// Blocks that fit in `budget_bytes` (at least 0).
int kv_blocks_for_budget(size_t budget_bytes, const ModelConfig& config, int block_size, size_t dtype_bytes);

class BlockManager {
 public:
  BlockManager(int num_blocks, int block_size, bool enable_prefix_caching);

  int block_size() const { return block_size_; }
  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  // Blocks with no reference (plain free or cached-free); all of them can be handed out.
  int num_free_blocks() const { return static_cast<int>(free_list_.size()); }
  int num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  int blocks_for_tokens(int num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Leading full blocks of `tokens` already in the cache, capped so at least one token is left to compute (the
  // forward of the last prompt token yields the logits of the first generated token).
  std::vector<int32_t> find_cached_prefix(std::span<const int32_t> tokens) const;

  // Admission of a sequence without blocks: takes `prefix` (from find_cached_prefix, sets num_computed to its
  // length) and allocates fresh blocks so slots [0, num_slots) are covered.
  bool can_allocate(std::span<const int32_t> prefix, int num_slots) const;
  void allocate(Sequence& seq, std::span<const int32_t> prefix, int num_slots);

  // Growth of a running sequence by `num_new_tokens` written at slots [num_computed, num_computed + n): new blocks
  // and, when the block being written is shared, a private copy (appended to `copies` as (src, dst)).
  bool can_append(const Sequence& seq, int num_new_tokens) const;
  void append(Sequence& seq, int num_new_tokens, std::vector<std::pair<int32_t, int32_t>>& copies);

  // Gives back the trailing blocks not needed for slots [0, num_slots) (the KV of rejected draft tokens). Those
  // blocks were appended privately for the draft, so nothing shared is dropped.
  void truncate(Sequence& seq, int num_slots);

  // After a forward: hashes and publishes the sequence's newly completed full blocks in the prefix cache.
  void commit_computed_blocks(Sequence& seq);

  // `child` shares all of `parent`'s blocks (n > 1 after the prompt is computed).
  void fork(const Sequence& parent, Sequence& child);

  // Drops the sequence's references; blocks reaching zero go to the free pool (cached ones stay reusable until
  // evicted, least recently freed first). Resets num_computed and the tables.
  void free(Sequence& seq);

  int ref_count(int32_t block) const { return blocks_[static_cast<size_t>(block)].ref_count; }
  int num_cached_blocks() const { return static_cast<int>(hash_to_block_.size()); }

 private:
  struct Block {
    int ref_count = 0;
    bool hashed = false;
    uint64_t hash = 0;
    std::vector<int32_t> tokens;  // of a hashed block, to verify hits
    std::list<int32_t>::iterator free_pos;
    bool in_free_list = false;
  };

  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens);
  int32_t take_free_block();  // pops the LRU free block, evicting its cache entry
  void acquire(int32_t block);
  void release(int32_t block);
  int blocks_needed_for_append(const Sequence& seq, int num_new_tokens) const;
  int prefix_blocks_in_free_list(std::span<const int32_t> prefix) const;

  int block_size_;
  bool enable_prefix_caching_;
  std::vector<Block> blocks_;
  std::list<int32_t> free_list_;  // front = next to hand out
  std::unordered_map<uint64_t, int32_t> hash_to_block_;
};

}  // namespace qed
