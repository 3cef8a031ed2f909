#pragma once
// Turns a scheduled step into the backend's ForwardBatch, runs it, and samples next tokens from the logits rows.
// Sampling is per sequence with its own seed and the index of the token being generated as the step of its random
// stream, so a sequence draws the same tokens whether it runs alone or batched with others.
#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "engine/scheduler.h"

namespace qed {

// A draw the engine will ask for after the forward: sequence `seq` (a fork's child included) from the row of
// scheduled entry `scheduled_index`, as its token number `step`.
struct PlannedSample {
  size_t scheduled_index = 0;
  const Sequence* seq = nullptr;
  const SamplingParams* params = nullptr;
  uint64_t step = 0;
};

class ModelRunner {
 public:
  explicit ModelRunner(Backend& backend) : backend_(backend) {}
  // Also fetch the final-norm hidden state of every logits row (ReDrafter drafts from it).
  void set_want_hidden(bool want) { want_hidden_ = want; }

  // Copy-on-write block copies first, then one forward over every scheduled chunk. Each chunk yields one logits
  // row (its last token), plus one per draft node when it carries a draft; rows of chunks that do not sample are
  // ignored. When the backend can draw every planned sample on the device, it does so inside the forward and no
  // logits come back (token ids only): a draft's rows are all drawn there, each as the token number it would be,
  // and verification reads those its accepted path reaches. Steps that want hidden states keep host sampling.
  void execute(const SchedulerOutput& step, std::span<const PlannedSample> samples = {});
  // Row `row` of scheduled entry `scheduled_index`: 0 = its last known token, 1 + i = draft node i.
  std::span<const float> logits(size_t scheduled_index, size_t row = 0) const;
  // The hidden state of the same row; empty unless set_want_hidden(true).
  std::span<const float> hidden(size_t scheduled_index, size_t row = 0) const;
  // Next token of `seq` from that row (a fork samples its parent's row): the draw the sequence's random stream
  // gives its next generated token, with its tokens so far as the repetition-penalty history. A planned device draw
  // is returned as drawn.
  SampledToken sample(size_t scheduled_index, const Sequence& seq, const SamplingParams& params, size_t row = 0) const;

  int64_t num_forwarded_tokens() const { return num_forwarded_tokens_; }

 private:
  Backend& backend_;
  ForwardBatch batch_;
  ForwardResult result_;
  std::vector<size_t> first_row_;                // per scheduled entry, its first logits row
  std::vector<const Sequence*> device_sampled_;  // the sequence of each batch_.device_samples entry
  int64_t num_forwarded_tokens_ = 0;
  bool want_hidden_ = false;
};

}  // namespace qed
