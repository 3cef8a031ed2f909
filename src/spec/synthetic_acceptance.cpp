#include "spec/synthetic_acceptance.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "spec/counter_coin.h"

namespace qed::spec {

bool synthetic_accepts(const SyntheticAcceptance& config, uint64_t sequence_seed, int64_t position) {
  const uint64_t key = mix(mix(config.seed ^ 0x5eed5a17c0117a9eULL) ^ sequence_seed);
  return unit_interval(mix(key ^ static_cast<uint64_t>(position))) < config.p;
}

SyntheticDrafter::SyntheticDrafter(double p, int draft_len, int vocab_size, uint64_t seed)
    : p_(p), draft_len_(draft_len), vocab_size_(vocab_size), seed_(seed) {
  if (!(p_ >= 0 && p_ <= 1)) fail("synthetic drafter: p = {} must be in [0, 1]", p_);
  if (draft_len_ < 1) fail("synthetic drafter: draft_len {} must be >= 1", draft_len_);
  if (vocab_size_ < 1) fail("synthetic drafter: vocab_size {} must be >= 1", vocab_size_);
}

std::string SyntheticDrafter::name() const {
  return fmt::format("synthetic-p{}", p_);
}

DraftTree SyntheticDrafter::propose(const DraftContext& context) const {
  const int depth = std::min(draft_len_, context.max_depth);
  if (depth <= 0) return {};
  std::vector<int32_t> draft(static_cast<size_t>(depth));
  const uint64_t from = context.tokens.size();
  for (size_t i = 0; i < draft.size(); ++i)
    draft[i] = static_cast<int32_t>(mix(seed_ ^ mix(from + i)) % static_cast<uint64_t>(vocab_size_));
  return DraftTree::linear(draft);
}

double parse_synthetic_p(const std::string& text) {
  return parse_probability_label(text, "synthetic-p", "the synthetic acceptance p");
}

}  // namespace qed::spec
