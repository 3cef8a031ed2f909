#pragma once
// Continuous batching: every step picks which sequences run and how many of their tokens, under a token budget
// and a sequence limit. Running sequences go first in FIFO order (decodes and unfinished prefill chunks), then
// waiting ones are admitted FIFO with whatever budget is left (chunked prefill: a long prompt takes several
// steps). When the KV cache runs out, the most recently admitted running sequence is preempted: its blocks are
// freed and it waits at the front of the queue to be recomputed (prefix caching usually makes that cheap).
// Held sequences (paused for a tool call) sit outside both queues with their blocks; they are the first whose
// blocks are taken when the cache runs out, and then recompute on resume like a preempted sequence.
#include <deque>
#include <utility>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"

namespace qed {

struct SchedulerConfig {
  int max_num_seqs = 64;             // sequences per step
  int max_num_batched_tokens = 512;  // tokens per step (prefill chunks + decodes)
};

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int num_new_tokens = 0;  // tokens [num_computed, num_computed + n) run this step
  // The chunk reaches the end of the known tokens, so its last logits row yields the next token.
  bool samples = false;
};

struct SchedulerOutput {
  std::vector<ScheduledSequence> scheduled;
  std::vector<std::pair<int32_t, int32_t>> block_copies;  // copy-on-write, before the forward
  std::vector<Sequence*> preempted;
  // Sequences that can never fit in the KV cache; the scheduler has finished them with the given reason.
  std::vector<Sequence*> rejected;
  int num_prefill_tokens = 0;  // scheduled tokens of sequences still computing known tokens
  int num_cached_tokens = 0;   // tokens skipped at admission thanks to the prefix cache
  bool empty() const { return scheduled.empty(); }
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager& blocks);

  void add(Sequence* seq);  // to the waiting queue, ordered by arrival_order
  // A fork of a running sequence joins right behind it.
  void add_running_after(Sequence* parent, Sequence* child);
  // Removes the sequence from the queues and frees its blocks (finish or abort).
  void remove(Sequence* seq);
  // A running sequence pauses, keeping its blocks; resume puts it back: running if it still has its blocks (its
  // new tokens are then prefilled as a chunk on the cached K/V), else waiting to be recomputed.
  void hold(Sequence* seq);
  void resume(Sequence* seq);
  // The status the queues say the sequence has (Finished when in none): for the engine's invariant checks.
  SequenceStatus queue_of(const Sequence* seq) const;

  SchedulerOutput schedule();
  // After the forward: the scheduled tokens now have K/V; full blocks are published for prefix reuse.
  void on_step_done(const SchedulerOutput& output);

  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  size_t num_held() const { return held_.size(); }
  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  int64_t num_preemptions() const { return num_preemptions_; }

 private:
  void preempt(Sequence* seq, SchedulerOutput& out);
  void evict_held(SchedulerOutput& out);
  bool has_evictable_held() const;
  bool schedule_running(SchedulerOutput& out, int& budget);
  void admit_waiting(SchedulerOutput& out, int& budget);

  SchedulerConfig config_;
  BlockManager& blocks_;
  std::deque<Sequence*> waiting_;
  std::deque<Sequence*> running_;
  std::deque<Sequence*> held_;  // oldest hold first: the first evicted
  int64_t num_preemptions_ = 0;
};

}  // namespace qed
