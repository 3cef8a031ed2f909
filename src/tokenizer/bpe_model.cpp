#include "tokenizer/bpe_model.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/byte_level.h"

namespace qed::tok {
namespace {

// std heap functions build a max-heap; "greater" puts the lowest rank, then the leftmost pair, on top.
struct LaterCandidate {
  template <typename C>
  bool operator()(const C& a, const C& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  }
};

}  // namespace

BpeModel::BpeModel(const BpeSpec& spec, const StringIdTable& vocab_by_string, const std::string& source)
    : ignore_merges_(spec.ignore_merges), fuse_unk_(spec.fuse_unk) {
  byte_ids_.fill(-1);
  if (ignore_merges_) words_.reserve(spec.vocab.size());
  for (const auto& [token, id] : spec.vocab) {
    const auto bytes = byte_level::to_bytes(token);
    if (!bytes) continue;  // not made of byte-level characters: BPE can never produce it
    if (bytes->size() == 1) byte_ids_[static_cast<uint8_t>((*bytes)[0])] = vocab_by_string.find(token);
    if (ignore_merges_) words_.insert(*bytes, vocab_by_string.find(token));
  }

  merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    const int32_t left_id = vocab_by_string.find(left);
    const int32_t right_id = vocab_by_string.find(right);
    const int32_t merged_id = vocab_by_string.find(left + right);
    for (const auto& [token, id] : {std::pair{&left, left_id}, {&right, right_id}}) {
      if (id < 0) fail("{}: model.merges[{}]: '{}' is not in model.vocab", source, rank, *token);
    }
    if (merged_id < 0)
      fail("{}: model.merges[{}]: merged token '{}' is not in model.vocab", source, rank, left + right);
    merges_.insert(left_id, right_id, MergeTable::Value{static_cast<uint32_t>(rank), merged_id});
  }

  if (spec.unk_token) {
    unk_id_ = vocab_by_string.find(*spec.unk_token);
    if (unk_id_ < 0) fail("{}: model.unk_token '{}' is not in model.vocab", source, *spec.unk_token);
  }
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    // Llama-3: a word that is itself a token is emitted whole, even where merges would split it differently.
    const int32_t whole = words_.find(word);
    if (whole >= 0) {
      ids.push_back(whole);
      return;
    }
  }
  if (word.size() == 1) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(word[0])];
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  const uint64_t hash = hash_bytes(word);
  if (cache_.lookup(word, hash, ids)) return;
  const size_t first = ids.size();
  merge(word, ids);
  cache_.insert(word, hash, ids.data() + first, ids.size() - first);
}

void BpeModel::push_candidate(const std::vector<Symbol>& symbols, int32_t left, std::vector<Candidate>& heap) const {
  const Symbol& l = symbols[static_cast<size_t>(left)];
  const Symbol& r = symbols[static_cast<size_t>(l.next)];
  const MergeTable::Value* m = merges_.find(l.id, r.id);
  if (m == nullptr) return;
  heap.push_back(Candidate{m->rank, static_cast<uint32_t>(left), l.length, r.length, m->merged_id});
  std::push_heap(heap.begin(), heap.end(), LaterCandidate{});
}

void BpeModel::merge(std::string_view word, std::vector<int32_t>& ids) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();

  // Initial symbols: one per byte. Bytes missing from the vocab become unk (fused if asked) or vanish, as in HF.
  int32_t pending_unk_length = 0;
  auto add_symbol = [&](int32_t id, uint32_t length) {
    symbols.push_back(Symbol{id, static_cast<int32_t>(symbols.size()) - 1, -1, length});
  };
  for (const char c : word) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      if (pending_unk_length > 0) add_symbol(unk_id_, static_cast<uint32_t>(pending_unk_length));
      pending_unk_length = 0;
      add_symbol(id, 1);
    } else if (unk_id_ >= 0) {
      if (pending_unk_length > 0 && !fuse_unk_) {
        add_symbol(unk_id_, static_cast<uint32_t>(pending_unk_length));
        pending_unk_length = 0;
      }
      pending_unk_length += 1;
    }
  }
  if (pending_unk_length > 0) add_symbol(unk_id_, static_cast<uint32_t>(pending_unk_length));
  if (symbols.empty()) return;
  for (size_t i = 0; i + 1 < symbols.size(); ++i) symbols[i].next = static_cast<int32_t>(i + 1);

  for (size_t i = 0; i + 1 < symbols.size(); ++i) push_candidate(symbols, static_cast<int32_t>(i), heap);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), LaterCandidate{});
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.left];
    // Stale if either side changed since the candidate was pushed: symbols only ever grow, so equal lengths
    // mean the same two symbols (HF re-looks-up the pair instead; same outcome).
    if (left.length != top.left_length || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    if (right.length != top.right_length) continue;

    left.id = top.merged_id;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = static_cast<int32_t>(top.left);
    if (left.prev >= 0) push_candidate(symbols, left.prev, heap);
    if (left.next >= 0) push_candidate(symbols, static_cast<int32_t>(top.left), heap);
  }

  for (int32_t i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next)
    ids.push_back(symbols[static_cast<size_t>(i)].id);
}

}  // namespace qed::tok
