#pragma once
// Byte-level BPE over raw bytes: merge ranks in a flat hash table, merges applied lowest rank first (leftmost
// on ties) through a binary heap over a linked list of symbols, so a long word costs O(n log n), not O(n^2).
// Results are memoized per word. Matches HF `tokenizers`' BPE::tokenize (ignore_merges, unk/fuse_unk included).
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/hash_tables.h"
#include "tokenizer/tokenizer_spec.h"
#include "tokenizer/word_cache.h"

namespace qed::tok {

class BpeModel {
 public:
  // `vocab_by_string`: the model vocab keyed by the strings of tokenizer.json (byte-level characters).
  BpeModel(const BpeSpec& spec, const StringIdTable& vocab_by_string, const std::string& source);

  // Appends the ids of one pre-tokenized word (raw bytes).
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

 private:
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t length;  // bytes covered; 0 once merged into its left neighbour
  };
  struct Candidate {
    uint32_t rank;
    uint32_t left;  // index of the left symbol
    uint32_t left_length;
    uint32_t right_length;
    int32_t merged_id;
  };

  void merge(std::string_view word, std::vector<int32_t>& ids) const;
  void push_candidate(const std::vector<Symbol>& symbols, int32_t left, std::vector<Candidate>& heap) const;

  std::array<int32_t, 256> byte_ids_{};  // -1: byte missing from the vocab
  MergeTable merges_;
  StringIdTable words_;  // raw-byte vocab for ignore_merges; empty otherwise
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  mutable WordCache cache_;
};

}  // namespace qed::tok
