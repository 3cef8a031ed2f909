#include "spec/redrafter_drafter.h"

#include <algorithm>

#include "core/error.h"

namespace qed::spec {

RedrafterDrafter::RedrafterDrafter(RedrafterHead head, std::vector<float> embeddings, RedrafterDrafterConfig config)
    : head_(std::move(head)), embeddings_(std::move(embeddings)), config_(config) {
  const RedrafterConfig& c = head_.config();
  if (embeddings_.size() != static_cast<size_t>(c.vocab_size) * static_cast<size_t>(c.hidden_size)) {
    fail("redrafter: embedding table of {} values does not match the head's vocab {} × hidden {}", embeddings_.size(),
         c.vocab_size, c.hidden_size);
  }
  if (config_.num_beams < 1 || config_.draft_len_per_beam < 1) {
    fail("redrafter: num_beams {} and draft_len_per_beam {} must be >= 1", config_.num_beams,
         config_.draft_len_per_beam);
  }
}

DraftTree RedrafterDrafter::propose(const DraftContext& context) const {
  const int depth = std::min(config_.draft_len_per_beam, context.max_depth);
  if (depth < 1 || context.tokens.empty() || context.hidden.size() != static_cast<size_t>(head_.config().hidden_size)) {
    return {};
  }
  const int32_t last = context.tokens.back();
  if (last < 0 || last >= head_.config().vocab_size) return {};  // base vocab larger than the head's
  const DraftBeams beams = head_.beam_search(context.hidden, last, embeddings_, config_.num_beams, depth + 1);
  return DraftTree::from_beams(beams.tokens);
}

}  // namespace qed::spec
