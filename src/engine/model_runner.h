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

  // Copy-on-write block copies first, then one forward over every scheduled chunk. Each chunk yields one logits
  // row (its last token); rows of chunks that do not sample are ignored. When the backend can draw every planned
  // sample on the device, it does so inside the forward and no logits come back (token ids only).
  void execute(const SchedulerOutput& step, std::span<const PlannedSample> samples = {});
  std::span<const float> logits(size_t scheduled_index) const;
  // Next token of `seq` from the logits of scheduled entry `scheduled_index` (a fork samples its parent's row).
  // A planned device draw is returned as drawn; otherwise sample_token() on the host.
  SampledToken sample(size_t scheduled_index, const Sequence& seq, const SamplingParams& params) const;

  int64_t num_forwarded_tokens() const { return num_forwarded_tokens_; }

 private:
  Backend& backend_;
  ForwardBatch batch_;
  ForwardResult result_;
  std::vector<const Sequence*> device_sampled_;  // the sequence of each batch_.device_samples entry
  int64_t num_forwarded_tokens_ = 0;
};

}  // namespace qed
