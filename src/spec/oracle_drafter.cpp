#include "spec/oracle_drafter.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"
#include "spec/counter_coin.h"

namespace qed::spec {
namespace {

uint64_t hash_tokens(std::span<const int32_t> tokens) {
  uint64_t h = 0x51ed270b27a3c1f5ULL;
  for (int32_t t : tokens) h = mix(h ^ static_cast<uint32_t>(t));
  return h;
}

}  // namespace

OracleDrafter::OracleDrafter(OracleDrafterConfig config, std::vector<RecordedSequence> records)
    : config_(config), records_(std::move(records)) {
  if (!(config_.p >= 0 && config_.p <= 1)) fail("oracle drafter: p = {} must be in [0, 1]", config_.p);
  if (config_.draft_len < 1) fail("oracle drafter: draft_len {} must be >= 1", config_.draft_len);
  if (config_.vocab_size < 2) fail("oracle drafter: vocab_size {} must be >= 2", config_.vocab_size);
  key_tokens_ = SIZE_MAX;
  for (size_t r = 0; r < records_.size(); ++r) {
    const RecordedSequence& record = records_[r];
    if (record.prompt_tokens == 0 || record.prompt_tokens > record.tokens.size())
      fail("oracle drafter: record {} has a prompt of {} of its {} tokens", r, record.prompt_tokens,
           record.tokens.size());
    for (int32_t t : record.tokens) {
      if (t < 0 || t >= config_.vocab_size)
        fail("oracle drafter: record {} holds token {} outside the vocabulary [0, {})", r, t, config_.vocab_size);
    }
    key_tokens_ = std::min(key_tokens_, record.prompt_tokens);
  }
  for (size_t r = 0; r < records_.size(); ++r) {
    const std::span<const int32_t> tokens(records_[r].tokens);
    records_by_key_[hash_tokens(tokens.first(key_tokens_))].push_back(r);
  }
}

std::string OracleDrafter::name() const {
  return fmt::format("oracle-p{}", config_.p);
}

OracleDrafter::Lookup OracleDrafter::look_up(std::span<const int32_t> context) const {
  Lookup found;
  if (records_.empty() || context.size() < key_tokens_) return found;
  const auto bucket = records_by_key_.find(hash_tokens(context.first(key_tokens_)));
  if (bucket == records_by_key_.end()) return found;
  for (size_t r : bucket->second) {
    const std::vector<int32_t>& tokens = records_[r].tokens;
    // From the end: samples of one prompt differ in their latest tokens, so wrong records fail fast.
    if (tokens.size() > context.size() &&
        std::equal(context.rbegin(), context.rend(),
                   tokens.rbegin() + static_cast<ptrdiff_t>(tokens.size() - context.size()))) {
      found.continuing.push_back(r);
    }
  }
  if (!found.continuing.empty()) return found;
  // Off every record: the one that shares the longest prefix with the context is followed blind.
  size_t longest = 0;
  for (size_t r : bucket->second) {
    const std::vector<int32_t>& tokens = records_[r].tokens;
    const size_t n = std::min(tokens.size(), context.size());
    const size_t shared = static_cast<size_t>(
        std::mismatch(tokens.begin(), tokens.begin() + static_cast<ptrdiff_t>(n), context.begin()).first -
        tokens.begin());
    if (!found.off_record || shared > longest) {
      found.off_record = r;
      longest = shared;
    }
  }
  return found;
}

DraftTree OracleDrafter::propose(const DraftContext& context) const {
  const Lookup lookup = look_up(context.tokens);
  const size_t from = context.tokens.size();
  const size_t followed =
      lookup.continuing.empty() ? lookup.off_record.value_or(records_.size()) : lookup.continuing[0];
  if (followed == records_.size() || records_[followed].tokens.size() <= from) {
    ++without_truth_;  // an unknown prompt, or a record that ends here: nothing to follow
    return {};
  }
  const std::vector<int32_t>& truth = records_[followed].tokens;
  const size_t depth = std::min({static_cast<size_t>(config_.draft_len),
                                 static_cast<size_t>(std::max(0, context.max_depth)), truth.size() - from});
  if (depth == 0) return {};
  // Several records through this context (samples of one prompt that have not split yet): only what they all
  // continue with is known; off every record nothing is.
  size_t known = lookup.continuing.empty() ? 0 : depth;
  for (size_t r : lookup.continuing) {
    const std::vector<int32_t>& other = records_[r].tokens;
    size_t agree = 0;
    while (agree < known && from + agree < other.size() && other[from + agree] == truth[from + agree]) ++agree;
    known = agree;
  }
  if (known < depth) ++without_truth_;
  std::vector<int32_t> draft(depth);
  const uint64_t sequence_key = mix(config_.seed ^ mix(followed));
  for (size_t i = 0; i < depth; ++i) {
    const uint64_t coin = mix(sequence_key ^ (from + i));
    const int32_t right = truth[from + i];
    if (unit_interval(coin) < config_.p) {
      draft[i] = right;
    } else {
      // Any other token: uniform over the vocab_size - 1 wrong ones.
      const uint64_t offset = 1 + mix(coin) % static_cast<uint64_t>(config_.vocab_size - 1);
      draft[i] =
          static_cast<int32_t>((static_cast<uint64_t>(right) + offset) % static_cast<uint64_t>(config_.vocab_size));
    }
  }
  ++proposals_;
  return DraftTree::linear(draft);
}

double parse_oracle_p(const std::string& text) {
  return parse_probability_label(text, "oracle-p", "the oracle's p");
}

}  // namespace qed::spec
