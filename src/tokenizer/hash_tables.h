#pragma once
// Open-addressing hash tables for the two lookups on the encode hot path: a merge rank per token-id pair, and a
// token id per byte string. Both are built once at load time and only read afterwards, so they need no deletion
// and no locking, and a lookup touches one or two cache lines instead of std::unordered_map's node chain.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace qed::tok {

inline uint64_t hash_bytes(std::string_view s) {
  // Multiply-xorshift over 8-byte words: fast, and good enough for vocab strings and words.
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xFF51AFD7ED558CCDull);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
  }
  if (i < s.size()) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
  }
  h *= 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 32);
}

inline size_t table_capacity_for(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;  // load factor <= 0.5
  return cap;
}

// (left id, right id) → (rank, merged id). Later inserts of the same pair win, as in HF's HashMap collect.
class MergeTable {
 public:
  struct Value {
    uint32_t rank;
    int32_t merged_id;
  };

  void reserve(size_t n) {
    keys_.assign(table_capacity_for(n), kEmpty);
    values_.assign(keys_.size(), Value{0, 0});
    mask_ = keys_.size() - 1;
  }

  void insert(int32_t left, int32_t right, Value value) {
    const uint64_t key = make_key(left, right);
    size_t slot = slot_for(key);
    while (keys_[slot] != kEmpty && keys_[slot] != key) slot = (slot + 1) & mask_;
    keys_[slot] = key;
    values_[slot] = value;
  }

  const Value* find(int32_t left, int32_t right) const {
    const uint64_t key = make_key(left, right);
    size_t slot = slot_for(key);
    while (true) {
      const uint64_t k = keys_[slot];
      if (k == key) return &values_[slot];
      if (k == kEmpty) return nullptr;
      slot = (slot + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;  // ids are < 2^31, so no real pair packs to this
  static uint64_t make_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  size_t slot_for(uint64_t key) const { return ((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }

  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  size_t mask_ = 0;
};

// Byte string → id, strings kept in one arena. Later inserts of the same string overwrite the id.
class StringIdTable {
 public:
  void reserve(size_t n) {
    slots_.assign(table_capacity_for(n), Slot{});
    mask_ = slots_.size() - 1;
  }

  void insert(std::string_view key, int32_t id) {
    const uint64_t h = hash_bytes(key);
    size_t slot = h & mask_;
    while (slots_[slot].id >= 0) {
      if (slots_[slot].hash == h && view(slots_[slot]) == key) {
        slots_[slot].id = id;
        return;
      }
      slot = (slot + 1) & mask_;
    }
    slots_[slot] = Slot{h, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), id};
    arena_.append(key);
    ++size_;
  }

  // -1 if absent.
  int32_t find(std::string_view key) const {
    if (slots_.empty()) return -1;
    const uint64_t h = hash_bytes(key);
    size_t slot = h & mask_;
    while (slots_[slot].id >= 0) {
      if (slots_[slot].hash == h && view(slots_[slot]) == key) return slots_[slot].id;
      slot = (slot + 1) & mask_;
    }
    return -1;
  }

  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0;
    uint32_t length = 0;
    int32_t id = -1;
  };
  std::string_view view(const Slot& s) const { return std::string_view(arena_).substr(s.offset, s.length); }

  std::vector<Slot> slots_;
  std::string arena_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace qed::tok
