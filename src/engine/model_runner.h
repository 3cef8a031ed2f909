#pragma once
// Turns a scheduled step into the backend's ForwardBatch, runs it, and samples next tokens from the logits rows.
// Sampling is per sequence with its own seed and the index of the token being generated as the step of its random
// stream, so a sequence draws the same tokens whether it runs alone or batched with others.
#include <cstdint>
#include <span>

#include "backend/backend.h"
#include "engine/scheduler.h"

namespace qed {

class ModelRunner {
 public:
  explicit ModelRunner(Backend& backend) : backend_(backend) {}
  // Also fetch the final-norm hidden state of every logits row (ReDrafter drafts from it).
  void set_want_hidden(bool want) { want_hidden_ = want; }

  // Copy-on-write block copies first, then one forward over every scheduled chunk. Each chunk yields one logits
  // row (its last token), plus one per draft node when it carries a draft; rows of chunks that do not sample are
  // ignored.
  void execute(const SchedulerOutput& step);
  // Row `row` of scheduled entry `scheduled_index`: 0 = its last known token, 1 + i = draft node i.
  std::span<const float> logits(size_t scheduled_index, size_t row = 0) const;
  // The hidden state of the same row; empty unless set_want_hidden(true).
  std::span<const float> hidden(size_t scheduled_index, size_t row = 0) const;
  // Next token of `seq` from that row (a fork samples its parent's row): the draw the sequence's random stream
  // gives its next generated token, with its tokens so far as the repetition-penalty history.
  SampledToken sample(size_t scheduled_index, const Sequence& seq, const SamplingParams& params, size_t row = 0) const;

  int64_t num_forwarded_tokens() const { return num_forwarded_tokens_; }

 private:
  Backend& backend_;
  ForwardBatch batch_;
  ForwardResult result_;
  std::vector<size_t> first_row_;  // per scheduled entry, its first logits row
  int64_t num_forwarded_tokens_ = 0;
  bool want_hidden_ = false;
};

}  // namespace qed
