#include "spec/ngram_drafter.h"

#include <algorithm>

#include "core/error.h"

namespace qed::spec {

NgramDrafter::NgramDrafter(NgramDrafterConfig config) : config_(config) {
  if (config_.num_draft_tokens < 1) fail("ngram drafter: num_draft_tokens {} must be >= 1", config_.num_draft_tokens);
  if (config_.min_ngram < 1 || config_.max_ngram < config_.min_ngram) {
    fail("ngram drafter: need 1 <= min_ngram ({}) <= max_ngram ({})", config_.min_ngram, config_.max_ngram);
  }
}

DraftTree NgramDrafter::propose(const DraftContext& context) const {
  const std::span<const int32_t> tokens = context.tokens;
  const size_t len = tokens.size();
  const size_t k = static_cast<size_t>(std::min(config_.num_draft_tokens, context.max_depth));
  if (k == 0) return {};
  for (int n = std::min<int>(config_.max_ngram, static_cast<int>(len) - 1); n >= config_.min_ngram; --n) {
    const std::span<const int32_t> suffix = tokens.subspan(len - static_cast<size_t>(n));
    // Latest earlier occurrence first: recent text predicts the next tokens best. The match must end before the
    // suffix itself so at least one continuation token exists.
    for (size_t start = len - static_cast<size_t>(n); start-- > 0;) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + static_cast<ptrdiff_t>(start))) continue;
      const size_t from = start + static_cast<size_t>(n);
      const size_t count = std::min(k, len - from);
      return DraftTree::linear(tokens.subspan(from, count));
    }
  }
  return {};
}

}  // namespace qed::spec
