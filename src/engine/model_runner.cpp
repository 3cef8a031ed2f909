#include "engine/model_runner.h"

#include "core/error.h"
#include "spec/draft_tree.h"

namespace qed {

void ModelRunner::execute(const SchedulerOutput& step, std::span<const PlannedSample> samples) {
  if (!step.block_copies.empty()) backend_.copy_kv_blocks(step.block_copies);
  batch_.sequences.resize(step.scheduled.size());
  batch_.want_hidden = want_hidden_;
  first_row_.resize(step.scheduled.size());
  size_t rows = 0;
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
    first_row_[i] = rows;
    rows += 1 + static_cast<size_t>(s.num_draft_tokens);
    if (s.num_draft_tokens > 0) {
      spec::append_draft_to_chunk(s.seq->draft, static_cast<size_t>(s.num_draft_tokens), s.seq->num_tokens() - 1,
                                  chunk);
    }
    num_forwarded_tokens_ += s.num_new_tokens + s.num_draft_tokens;
  }
  batch_.device_samples.clear();
  device_sampled_.clear();
  bool on_device = !samples.empty() && !want_hidden_;
  for (const PlannedSample& p : samples) on_device = on_device && backend_.can_sample_on_device(*p.params);
  if (on_device) {
    for (const PlannedSample& p : samples) {
      const size_t first = first_row_[p.scheduled_index];
      batch_.device_samples.push_back({static_cast<int32_t>(first), p.params, p.seq->seed, p.step});
      device_sampled_.push_back(p.seq);
      // Every draft row too: node i's row draws the token after it, which is the sequence's token number
      // step + depth(i) if verification gets there (it reads only the rows its accepted path reaches). Drawing them
      // all on the device saves copying every row's logits back, which at batch 32 × 4 rows × a 152k vocabulary
      // is 78 MB a step.
      const ScheduledSequence& s = step.scheduled[p.scheduled_index];
      if (s.seq != p.seq) continue;  // a fork's first draw: no draft
      for (int i = 0; i < s.num_draft_tokens; ++i) {
        batch_.device_samples.push_back({static_cast<int32_t>(first + 1 + static_cast<size_t>(i)), p.params,
                                         p.seq->seed,
                                         p.step + static_cast<uint64_t>(s.seq->draft.depth(static_cast<size_t>(i)))});
        device_sampled_.push_back(p.seq);
      }
    }
  }
  batch_.skip_logits = on_device;
  backend_.forward(batch_, result_);
  if (result_.samples.size() != batch_.device_samples.size()) {
    fail("{} backend: forward drew {} device samples of {}", backend_.name(), result_.samples.size(),
         batch_.device_samples.size());
  }
  if (result_.rows != static_cast<int>(rows)) {
    fail("{} backend: forward returned {} logits rows for {} expected", backend_.name(), result_.rows, rows);
  }
}

std::span<const float> ModelRunner::logits(size_t scheduled_index, size_t row) const {
  const size_t vocab = static_cast<size_t>(backend_.config().vocab_size);
  return std::span<const float>(result_.logits).subspan((first_row_[scheduled_index] + row) * vocab, vocab);
}

std::span<const float> ModelRunner::hidden(size_t scheduled_index, size_t row) const {
  if (!want_hidden_) return {};
  const size_t size = static_cast<size_t>(backend_.config().hidden_size);
  return std::span<const float>(result_.hidden).subspan((first_row_[scheduled_index] + row) * size, size);
}

SampledToken ModelRunner::sample(size_t scheduled_index, const Sequence& seq, const SamplingParams& params,
                                 size_t row) const {
  for (size_t i = 0; i < device_sampled_.size(); ++i) {
    if (device_sampled_[i] == &seq && size_t(batch_.device_samples[i].row) == first_row_[scheduled_index] + row) {
      return result_.samples[i];
    }
  }
  if (batch_.skip_logits) fail("engine: a draw of sequence {} was not planned before the forward", seq.seq_id);
  return sample_token(logits(scheduled_index, row), params, seq.seed, static_cast<uint64_t>(seq.num_generated()),
                      seq.tokens);
}

}  // namespace qed
