#include "engine/block_manager.h"

#include <algorithm>

#include "core/error.h"

namespace qed {

size_t kv_block_bytes(const ModelConfig& config, int block_size, size_t dtype_bytes) {
  return static_cast<size_t>(config.num_layers) * 2 * static_cast<size_t>(config.num_kv_heads) *
         static_cast<size_t>(config.head_dim) * static_cast<size_t>(block_size) * dtype_bytes;
}

int kv_blocks_for_budget(size_t budget_bytes, const ModelConfig& config, int block_size, size_t dtype_bytes) {
  const size_t per_block = kv_block_bytes(config, block_size, dtype_bytes);
  if (per_block == 0) fail("kv cache: model config has a zero-sized KV block (layers/kv heads/head_dim)");
  return static_cast<int>(budget_bytes / per_block);
}

BlockManager::BlockManager(int num_blocks, int block_size, bool enable_prefix_caching)
    : block_size_(block_size), enable_prefix_caching_(enable_prefix_caching) {
  if (num_blocks <= 0) fail("kv cache: {} blocks; the KV budget must hold at least one block", num_blocks);
  if (block_size <= 0) fail("kv cache: block size {} must be positive", block_size);
  blocks_.resize(static_cast<size_t>(num_blocks));
  for (int32_t b = 0; b < num_blocks; ++b) {
    free_list_.push_back(b);
    blocks_[static_cast<size_t>(b)].free_pos = std::prev(free_list_.end());
    blocks_[static_cast<size_t>(b)].in_free_list = true;
  }
}

uint64_t BlockManager::chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent hash and the token ids, then a splitmix finalizer to spread the bits.
  uint64_t h = 0xCBF29CE484222325ull ^ parent;
  for (int32_t t : tokens) {
    h ^= static_cast<uint32_t>(t);
    h *= 0x100000001B3ull;
  }
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

std::vector<int32_t> BlockManager::find_cached_prefix(std::span<const int32_t> tokens) const {
  std::vector<int32_t> hit;
  if (!enable_prefix_caching_ || tokens.empty()) return hit;
  const size_t max_blocks = (tokens.size() - 1) / static_cast<size_t>(block_size_);
  uint64_t parent = 0;
  for (size_t i = 0; i < max_blocks; ++i) {
    auto block_tokens = tokens.subspan(i * static_cast<size_t>(block_size_), static_cast<size_t>(block_size_));
    const uint64_t h = chain_hash(parent, block_tokens);
    auto it = hash_to_block_.find(h);
    if (it == hash_to_block_.end()) break;
    const Block& block = blocks_[static_cast<size_t>(it->second)];
    if (!std::equal(block.tokens.begin(), block.tokens.end(), block_tokens.begin(), block_tokens.end())) break;
    hit.push_back(it->second);
    parent = h;
  }
  return hit;
}

int BlockManager::prefix_blocks_in_free_list(std::span<const int32_t> prefix) const {
  int n = 0;
  for (int32_t b : prefix) n += blocks_[static_cast<size_t>(b)].in_free_list ? 1 : 0;
  return n;
}

bool BlockManager::can_allocate(std::span<const int32_t> prefix, int num_slots) const {
  const int fresh = blocks_for_tokens(num_slots) - static_cast<int>(prefix.size());
  // Reviving a cached-free prefix block takes it out of the free pool too.
  return std::max(fresh, 0) + prefix_blocks_in_free_list(prefix) <= num_free_blocks();
}

void BlockManager::acquire(int32_t block) {
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.in_free_list) {
    free_list_.erase(b.free_pos);
    b.in_free_list = false;
  }
  ++b.ref_count;
}

void BlockManager::release(int32_t block) {
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.ref_count <= 0) fail("kv cache: block {} released more often than acquired", block);
  if (--b.ref_count > 0) return;
  // Cached blocks queue at the back (evicted last, oldest first); plain ones are handed out before them.
  if (b.hashed) {
    free_list_.push_back(block);
    b.free_pos = std::prev(free_list_.end());
  } else {
    free_list_.push_front(block);
    b.free_pos = free_list_.begin();
  }
  b.in_free_list = true;
}

int32_t BlockManager::take_free_block() {
  if (free_list_.empty()) fail("kv cache: out of blocks (scheduler must check capacity first)");
  const int32_t block = free_list_.front();
  Block& b = blocks_[static_cast<size_t>(block)];
  if (b.hashed) {
    auto it = hash_to_block_.find(b.hash);
    if (it != hash_to_block_.end() && it->second == block) hash_to_block_.erase(it);
    b.hashed = false;
    b.tokens.clear();
  }
  acquire(block);
  return block;
}

void BlockManager::allocate(Sequence& seq, std::span<const int32_t> prefix, int num_slots) {
  if (!seq.block_table.empty()) fail("kv cache: sequence {} already holds blocks", seq.seq_id);
  if (!can_allocate(prefix, num_slots)) fail("kv cache: allocation of {} slots does not fit", num_slots);
  uint64_t parent = 0;
  for (int32_t b : prefix) {
    acquire(b);
    seq.block_table.push_back(b);
    parent = blocks_[static_cast<size_t>(b)].hash;
    seq.block_hashes.push_back(parent);
  }
  seq.num_computed = static_cast<int>(prefix.size()) * block_size_;
  while (static_cast<int>(seq.block_table.size()) < blocks_for_tokens(num_slots)) {
    seq.block_table.push_back(take_free_block());
  }
}

int BlockManager::blocks_needed_for_append(const Sequence& seq, int num_new_tokens) const {
  int needed = blocks_for_tokens(seq.num_computed + num_new_tokens) - static_cast<int>(seq.block_table.size());
  needed = std::max(needed, 0);
  // The first slot written lies in an existing, partially filled block: shared → it needs a private copy.
  const int first_block = seq.num_computed / block_size_;
  if (num_new_tokens > 0 && first_block < static_cast<int>(seq.block_table.size()) &&
      ref_count(seq.block_table[static_cast<size_t>(first_block)]) > 1) {
    ++needed;
  }
  return needed;
}

bool BlockManager::can_append(const Sequence& seq, int num_new_tokens) const {
  return blocks_needed_for_append(seq, num_new_tokens) <= num_free_blocks();
}

void BlockManager::append(Sequence& seq, int num_new_tokens, std::vector<std::pair<int32_t, int32_t>>& copies) {
  if (!can_append(seq, num_new_tokens)) fail("kv cache: append of {} tokens does not fit", num_new_tokens);
  const size_t first_block = static_cast<size_t>(seq.num_computed / block_size_);
  if (num_new_tokens > 0 && first_block < seq.block_table.size()) {
    const int32_t shared = seq.block_table[first_block];
    if (ref_count(shared) > 1) {
      const int32_t copy = take_free_block();
      copies.emplace_back(shared, copy);
      release(shared);
      seq.block_table[first_block] = copy;
    }
  }
  while (static_cast<int>(seq.block_table.size()) < blocks_for_tokens(seq.num_computed + num_new_tokens)) {
    seq.block_table.push_back(take_free_block());
  }
}

void BlockManager::truncate(Sequence& seq, int num_slots) {
  const size_t keep = static_cast<size_t>(blocks_for_tokens(num_slots));
  while (seq.block_table.size() > keep) {
    release(seq.block_table.back());
    seq.block_table.pop_back();
  }
  if (seq.block_hashes.size() > keep) seq.block_hashes.resize(keep);
}

void BlockManager::commit_computed_blocks(Sequence& seq) {
  const size_t full = static_cast<size_t>(seq.num_computed / block_size_);
  while (seq.block_hashes.size() < full) {
    const size_t i = seq.block_hashes.size();
    const uint64_t parent = i == 0 ? 0 : seq.block_hashes[i - 1];
    auto block_tokens = std::span<const int32_t>(seq.tokens)
                            .subspan(i * static_cast<size_t>(block_size_), static_cast<size_t>(block_size_));
    const uint64_t h = chain_hash(parent, block_tokens);
    seq.block_hashes.push_back(h);
    if (!enable_prefix_caching_) continue;
    const int32_t id = seq.block_table[i];
    Block& block = blocks_[static_cast<size_t>(id)];
    if (block.hashed) continue;  // shared from a fork or a prefix hit: already published
    // Another sequence may have computed the same content first; keep its entry and leave this block private.
    if (hash_to_block_.contains(h)) continue;
    block.hashed = true;
    block.hash = h;
    block.tokens.assign(block_tokens.begin(), block_tokens.end());
    hash_to_block_.emplace(h, id);
  }
}

void BlockManager::fork(const Sequence& parent, Sequence& child) {
  if (!child.block_table.empty()) fail("kv cache: fork target {} already holds blocks", child.seq_id);
  for (int32_t b : parent.block_table) acquire(b);
  child.block_table = parent.block_table;
  child.block_hashes = parent.block_hashes;
  child.num_computed = parent.num_computed;
}

void BlockManager::free(Sequence& seq) {
  // Last blocks first, so a sequence's tail is evicted before the prefix other requests are likelier to share.
  for (auto it = seq.block_table.rbegin(); it != seq.block_table.rend(); ++it) release(*it);
  seq.block_table.clear();
  seq.block_hashes.clear();
  seq.num_computed = 0;
}

}  // namespace qed
