#include "tokenizer/word_cache.h"

#include "tokenizer/hash_tables.h"

namespace qed::tok {

WordCache::WordCache(size_t max_entries) : entries_per_shard_(max_entries / kShards) {}

bool WordCache::lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& out) const {
  const Shard& shard = shards_[hash % kShards];
  std::lock_guard lock(shard.mutex);
  if (shard.slots.empty()) return false;
  const size_t mask = shard.slots.size() - 1;
  for (size_t slot = (hash >> 8) & mask;; slot = (slot + 1) & mask) {
    const Slot& s = shard.slots[slot];
    if (s.key_length == 0) return false;
    if (s.hash == hash && std::string_view(shard.keys).substr(s.key_offset, s.key_length) == word) {
      out.insert(out.end(), shard.ids.begin() + s.ids_offset, shard.ids.begin() + s.ids_offset + s.ids_count);
      return true;
    }
  }
}

void WordCache::insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t count) {
  if (word.empty() || word.size() > kMaxWordBytes) return;
  Shard& shard = shards_[hash % kShards];
  std::lock_guard lock(shard.mutex);
  if (shard.entries >= entries_per_shard_) return;
  if (shard.slots.empty()) shard.slots.resize(table_capacity_for(entries_per_shard_));
  const size_t mask = shard.slots.size() - 1;
  size_t slot = (hash >> 8) & mask;
  for (;; slot = (slot + 1) & mask) {
    const Slot& s = shard.slots[slot];
    if (s.key_length == 0) break;
    if (s.hash == hash && std::string_view(shard.keys).substr(s.key_offset, s.key_length) == word) return;
  }
  shard.slots[slot] = Slot{hash, static_cast<uint32_t>(shard.keys.size()), static_cast<uint32_t>(word.size()),
                           static_cast<uint32_t>(shard.ids.size()), static_cast<uint32_t>(count)};
  shard.keys.append(word);
  shard.ids.insert(shard.ids.end(), ids, ids + count);
  ++shard.entries;
}

}  // namespace qed::tok
