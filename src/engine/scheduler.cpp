#include "engine/scheduler.h"

#include <algorithm>

#include "core/error.h"

namespace qed {

namespace {
// Of the next `n` tokens to compute, those that are prompt or recompute work rather than the one decode token
// (the last sampled token, once the prompt is done).
int prefill_tokens_in(const Sequence& seq, int n) {
  const int prefill_end = std::max(seq.num_prompt_tokens, seq.num_tokens() - 1);
  return std::clamp(prefill_end - seq.num_computed, 0, n);
}
}  // namespace

Scheduler::Scheduler(SchedulerConfig config, BlockManager& blocks) : config_(config), blocks_(blocks) {
  if (config_.max_num_seqs <= 0) fail("scheduler: max_num_seqs {} must be positive", config_.max_num_seqs);
  if (config_.max_num_batched_tokens <= 0) {
    fail("scheduler: max_num_batched_tokens {} must be positive", config_.max_num_batched_tokens);
  }
}

void Scheduler::add(Sequence* seq) {
  seq->status = SequenceStatus::Waiting;
  auto pos = std::upper_bound(waiting_.begin(), waiting_.end(), seq,
                              [](const Sequence* a, const Sequence* b) { return a->arrival_order < b->arrival_order; });
  waiting_.insert(pos, seq);
}

void Scheduler::add_running_after(Sequence* parent, Sequence* child) {
  auto it = std::find(running_.begin(), running_.end(), parent);
  if (it == running_.end()) fail("scheduler: fork of sequence {} that is not running", parent->seq_id);
  child->status = SequenceStatus::Running;
  running_.insert(std::next(it), child);
}

void Scheduler::remove(Sequence* seq) {
  std::erase(waiting_, seq);
  std::erase(running_, seq);
  std::erase(held_, seq);
  blocks_.free(*seq);
}

void Scheduler::hold(Sequence* seq) {
  if (std::find(running_.begin(), running_.end(), seq) == running_.end()) {
    fail("scheduler: hold of sequence {} that is not running", seq->seq_id);
  }
  std::erase(running_, seq);
  seq->status = SequenceStatus::Held;
  held_.push_back(seq);
}

void Scheduler::resume(Sequence* seq) {
  if (std::find(held_.begin(), held_.end(), seq) == held_.end()) {
    fail("scheduler: resume of sequence {} that is not held", seq->seq_id);
  }
  std::erase(held_, seq);
  if (seq->block_table.empty()) {
    add(seq);
  } else {
    seq->status = SequenceStatus::Running;
    running_.push_back(seq);
  }
}

SequenceStatus Scheduler::queue_of(const Sequence* seq) const {
  auto in = [seq](const std::deque<Sequence*>& q) { return std::find(q.begin(), q.end(), seq) != q.end(); };
  if (in(running_)) return SequenceStatus::Running;
  if (in(waiting_)) return SequenceStatus::Waiting;
  if (in(held_)) return SequenceStatus::Held;
  return SequenceStatus::Finished;
}

void Scheduler::evict_held(SchedulerOutput& out) {
  for (Sequence* seq : held_) {
    if (seq->block_table.empty()) continue;
    blocks_.free(*seq);
    out.preempted.push_back(seq);
    ++num_preemptions_;
    return;
  }
}

bool Scheduler::has_evictable_held() const {
  return std::any_of(held_.begin(), held_.end(), [](const Sequence* s) { return !s->block_table.empty(); });
}

void Scheduler::preempt(Sequence* seq, SchedulerOutput& out) {
  std::erase(running_, seq);
  blocks_.free(*seq);
  seq->status = SequenceStatus::Waiting;
  waiting_.push_front(seq);
  out.preempted.push_back(seq);
  ++num_preemptions_;
}

bool Scheduler::schedule_running(SchedulerOutput& out, int& budget) {
  bool preempted_any = false;
  size_t i = 0;
  while (i < running_.size() && budget > 0) {
    Sequence* seq = running_[i];
    const int n = std::min(seq->num_uncomputed(), budget);
    bool fits = true;
    while (!blocks_.can_append(*seq, n)) {
      preempted_any = true;
      // A paused sequence may wait seconds for its tool: its blocks are worth less than a running one's.
      if (has_evictable_held()) {
        evict_held(out);
        continue;
      }
      if (running_.size() > i + 1) {
        preempt(running_.back(), out);
        continue;
      }
      fits = false;
      if (i == 0) {
        // It holds every used block and still needs more: it has outgrown the cache.
        remove(seq);
        seq->status = SequenceStatus::Finished;
        seq->finish_reason = FinishReason::Length;
        out.rejected.push_back(seq);
      } else {
        preempt(seq, out);
      }
      break;
    }
    if (!fits) continue;
    blocks_.append(*seq, n, out.block_copies);
    out.scheduled.push_back({seq, n, seq->num_computed + n == seq->num_tokens()});
    out.num_prefill_tokens += prefill_tokens_in(*seq, n);
    budget -= n;
    ++i;
  }
  return preempted_any;
}

void Scheduler::admit_waiting(SchedulerOutput& out, int& budget) {
  while (!waiting_.empty() && budget > 0 && static_cast<int>(running_.size()) < config_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    if (blocks_.blocks_for_tokens(seq->num_tokens()) > blocks_.num_blocks()) {
      waiting_.pop_front();
      blocks_.free(*seq);
      seq->status = SequenceStatus::Finished;
      // A fresh prompt that can never fit is an error; a preempted sequence has merely run out of room.
      seq->finish_reason = seq->num_generated() > 0 ? FinishReason::Length : FinishReason::Error;
      out.rejected.push_back(seq);
      continue;
    }
    const std::vector<int32_t> prefix = blocks_.find_cached_prefix(seq->tokens);
    const int cached = static_cast<int>(prefix.size()) * blocks_.block_size();
    const int n = std::min(seq->num_tokens() - cached, budget);
    // FIFO: the head waits for room rather than letting later requests overtake it.
    if (!blocks_.can_allocate(prefix, cached + n)) break;
    blocks_.allocate(*seq, prefix, cached + n);
    waiting_.pop_front();
    seq->status = SequenceStatus::Running;
    running_.push_back(seq);
    out.scheduled.push_back({seq, n, cached + n == seq->num_tokens()});
    out.num_prefill_tokens += prefill_tokens_in(*seq, n);
    out.num_cached_tokens += cached;
    budget -= n;
  }
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int budget = config_.max_num_batched_tokens;
  // After a preemption the cache is full: admitting new work now would only preempt it again.
  if (!schedule_running(out, budget)) admit_waiting(out, budget);
  return out;
}

void Scheduler::on_step_done(const SchedulerOutput& output) {
  for (const ScheduledSequence& s : output.scheduled) {
    s.seq->num_computed += s.num_new_tokens;
    blocks_.commit_computed_blocks(*s.seq);
  }
}

}  // namespace qed
