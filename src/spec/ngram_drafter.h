#pragma once
// Prompt-lookup drafting (no model): the continuation that followed the latest earlier occurrence of the
// sequence's last n tokens, trying the longest n first (vLLM's ngram proposer, Saxena's prompt lookup decoding).
// Tool-integrated reasoning repeats the prompt's numbers and its own code, so such matches are frequent.
#include "spec/drafter.h"

namespace qed::spec {

struct NgramDrafterConfig {
  int num_draft_tokens = 4;  // K: tokens proposed per step
  int max_ngram = 4;         // longest suffix matched
  int min_ngram = 1;         // shortest suffix matched
};

class NgramDrafter final : public Drafter {
 public:
  explicit NgramDrafter(NgramDrafterConfig config);
  std::string name() const override { return "ngram"; }
  DraftTree propose(const DraftContext& context) const override;

 private:
  NgramDrafterConfig config_;
};

}  // namespace qed::spec
