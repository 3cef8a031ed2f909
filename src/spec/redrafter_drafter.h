#pragma once
// ReDrafter as the engine's drafter: beam search over the draft head from the base model's hidden state at the
// last token, the beams merged into a prefix tree (shared prefixes verified once).
#include <memory>

#include "spec/drafter.h"
#include "spec/redrafter_head.h"

namespace qed::spec {

struct RedrafterDrafterConfig {
  int num_beams = 4;           // TRT-LLM redrafter_num_beams
  int draft_len_per_beam = 3;  // TRT-LLM redrafter_draft_len_per_beam (≤ the head's trained n)
};

class RedrafterDrafter final : public Drafter {
 public:
  // `embeddings`: the base model's token embedding table (vocab × hidden), which the head reads.
  RedrafterDrafter(RedrafterHead head, std::vector<float> embeddings, RedrafterDrafterConfig config);
  std::string name() const override { return "redrafter"; }
  bool wants_hidden() const override { return true; }
  DraftTree propose(const DraftContext& context) const override;

 private:
  RedrafterHead head_;
  std::vector<float> embeddings_;
  RedrafterDrafterConfig config_;
};

}  // namespace qed::spec
