#include "engine/model_runner.h"

#include "core/error.h"

namespace qed {

void ModelRunner::execute(const SchedulerOutput& step) {
  if (!step.block_copies.empty()) backend_.copy_kv_blocks(step.block_copies);
  batch_.sequences.resize(step.scheduled.size());
  batch_.want_hidden = false;
  for (size_t i = 0; i < step.scheduled.size(); ++i) {
    const ScheduledSequence& s = step.scheduled[i];
    SequenceChunk& chunk = batch_.sequences[i];
    const auto begin = s.seq->tokens.begin() + s.seq->num_computed;
    chunk.tokens.assign(begin, begin + s.num_new_tokens);
    chunk.num_cached = s.seq->num_computed;
    chunk.positions.clear();
    chunk.block_table = s.seq->block_table;
    chunk.attention_mask.clear();
    // The backend has no "no logits" option; a non-sampling prefill chunk costs one unused row.
    chunk.logits_indices.clear();
    num_forwarded_tokens_ += s.num_new_tokens;
  }
  backend_.forward(batch_, result_);
  if (result_.rows != static_cast<int>(step.scheduled.size())) {
    fail("{} backend: forward returned {} logits rows for {} sequences", backend_.name(), result_.rows,
         step.scheduled.size());
  }
}

std::span<const float> ModelRunner::logits(size_t scheduled_index) const {
  const size_t vocab = static_cast<size_t>(backend_.config().vocab_size);
  return std::span<const float>(result_.logits).subspan(scheduled_index * vocab, vocab);
}

SampledToken ModelRunner::sample(size_t scheduled_index, const Sequence& seq, const SamplingParams& params) const {
  return sample_token(logits(scheduled_index), params, seq.seed, static_cast<uint64_t>(seq.num_generated()),
                      seq.tokens);
}

}  // namespace qed
