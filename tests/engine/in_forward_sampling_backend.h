#pragma once
// A backend that "samples on the device" the way a GPU backend does, on top of any CPU-side backend: it runs the
// reference sampler inside forward() for every planned draw, and returns no logits when the step asks to skip them,
// so a draw the engine did not plan fails instead of reading logits. Used by the engine's device-sampling tests and
// the speculative tests' draft-row checks.
#include <gtest/gtest.h>

#include <span>
#include <string>
#include <utility>

#include "backend/backend.h"
#include "backend/sampling.h"

namespace qed::testing {

class InForwardSamplingBackend final : public Backend {
 public:
  explicit InForwardSamplingBackend(Backend& inner) : inner_(inner) {}
  std::string name() const override { return "in-forward-sampling"; }
  const ModelConfig& config() const override { return inner_.config(); }
  KvCacheLayout kv_layout() const override { return inner_.kv_layout(); }
  bool can_sample_on_device(const SamplingParams& params) const override { return params.repetition_penalty == 1.0f; }
  void copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) override { inner_.copy_kv_blocks(src_dst); }
  void forward(const ForwardBatch& batch, ForwardResult& result) override {
    // The inner (CPU) backend honours skip_logits by computing none; this one samples from them, so it asks for all.
    ForwardBatch with_logits = batch;
    with_logits.skip_logits = false;
    inner_.forward(with_logits, result);
    const size_t vocab = size_t(config().vocab_size);
    result.samples.clear();
    for (const DeviceSample& s : batch.device_samples) {
      EXPECT_TRUE(can_sample_on_device(*s.params));
      const std::span<const float> row(result.logits.data() + size_t(s.row) * vocab, vocab);
      result.samples.push_back(sample_token(row, *s.params, s.seed, s.step, {}));
      ++device_draws;
    }
    bool drafts = false;
    for (const SequenceChunk& c : batch.sequences) drafts = drafts || !c.attention_mask.empty();
    if (drafts && batch.skip_logits) ++verify_steps_without_logits;
    if (batch.skip_logits) result.logits.clear();  // as a real device backend: nothing else comes back
  }

  int device_draws = 0;
  int verify_steps_without_logits = 0;  // steps with a draft whose logits stayed on the "device"

 private:
  Backend& inner_;
};

}  // namespace qed::testing
