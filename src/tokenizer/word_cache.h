#pragma once
// Word → token ids, shared by all threads encoding with one tokenizer. Text repeats words constantly, so most
// words skip BPE entirely. Like HF's cache it stops growing when full (no eviction, so lookups never race with
// frees) and skips long words. Sharded mutexes keep concurrent encoders from serializing on one lock.
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace qed::tok {

class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;

  explicit WordCache(size_t max_entries = 1 << 17);

  // Appends the cached ids of `word` to `out`; false on a miss.
  bool lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& out) const;
  void insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t count);

 private:
  static constexpr size_t kShards = 16;
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0;
    uint32_t key_length = 0;  // 0 = empty slot (empty words are never cached)
    uint32_t ids_offset = 0;
    uint32_t ids_count = 0;
  };
  struct Shard {
    mutable std::mutex mutex;
    std::vector<Slot> slots;  // allocated on first insert
    std::string keys;
    std::vector<int32_t> ids;
    size_t entries = 0;
  };

  size_t entries_per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace qed::tok
