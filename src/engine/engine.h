#pragma once
// The engine core: requests in, one scheduled forward per step(), tokens out. Single-threaded by design;
// EngineLoop runs it on its own thread. Per step: schedule → copy-on-write → forward → sample → detokenize and
// check stops → free what finished.
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "engine/block_manager.h"
#include "engine/model_runner.h"
#include "engine/request_output.h"
#include "engine/scheduler.h"
#include "engine/stop_strings.h"
#include "engine/token_decoder.h"
#include "spec/drafter.h"
#include "spec/synthetic_acceptance.h"

namespace qed {

struct EngineConfig {
  SchedulerConfig scheduler;
  int num_kv_blocks = 0;  // 0 = all the backend has; fewer to cap the cache (tests, budgets)
  bool enable_prefix_caching = true;
  int max_model_len = 0;  // 0 = the model's max_position_embeddings (or unlimited if it has none)
  std::optional<std::vector<int32_t>> eos_token_ids;  // default: the model config's
  uint64_t seed = 0;                                  // seeds requests that bring none, in arrival order
  // Speculative decoding: proposes candidates for every running sequence of a request with
  // SamplingParams::speculate, verified in the same forward as the step's other work. Null = off.
  std::shared_ptr<const spec::Drafter> drafter;
  // Bench only (qed bench offline --spec synthetic-p<P>; no serve or generate flag sets it): verification accepts
  // draft tokens by a seeded Bernoulli(p) coin instead of the target's draw and emits them, so outputs are not the
  // model's. A cost model of speculation at acceptance p (see spec/synthetic_acceptance.h). Needs a drafter.
  std::optional<spec::SyntheticAcceptance> synthetic_acceptance;
};

struct EngineStats {
  int64_t steps = 0;
  int64_t prompt_tokens = 0;   // of admitted requests
  int64_t prefill_tokens = 0;  // prompt (or recompute) tokens actually run
  int64_t cached_tokens = 0;   // prompt tokens skipped by prefix-cache hits
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
  // Speculative decoding: sequence-steps that verified a draft, draft tokens verified, and those accepted (each
  // verify step also yields one token of the base model's own, so tokens per verify step = 1 + accepted / steps).
  int64_t spec_verify_steps = 0;
  int64_t spec_draft_tokens = 0;
  int64_t spec_accepted_tokens = 0;
  // Per draft depth (index d for depth d + 1): verify steps that tested a node at that depth (every node above it
  // on the path accepted, the sequence still running) and those that accepted it; their ratio is the acceptance
  // rate at that draft position, which benchmarks report next to the totals.
  std::vector<int64_t> spec_tested_at_depth;
  std::vector<int64_t> spec_accepted_at_depth;
};

class Engine {
 public:
  Engine(Backend& backend, EngineConfig config, TokenDecoderFactory decoders = {});
  ~Engine();

  // Throws qed::Error on requests no engine could run (empty prompt, token ids outside the vocab, n < 1).
  void validate(std::span<const int32_t> prompt, const SamplingParams& params) const;
  RequestId add_request(std::vector<int32_t> prompt, const SamplingParams& params, RequestCallbacks callbacks = {});
  // Same, under an id reserved earlier with reserve_request_id (thread-safe) by another thread.
  void add_request(RequestId id, std::vector<int32_t> prompt, const SamplingParams& params, RequestCallbacks callbacks);
  RequestId reserve_request_id() { return next_request_id_.fetch_add(1); }
  // Finishes all of the request's sequences with FinishReason::Abort and frees their blocks. Unknown ids are
  // ignored (the request may have just finished).
  void abort(RequestId id);
  void abort_all();

  // Continues sequence `index` of a request paused at a hold string (TokenEvent::held): `tokens` (a tool's output,
  // may be empty) are appended to its context without counting as generated, prefilled as one chunk on top of its
  // cached K/V, and decoding goes on. stop_held ends it instead (finish reason Stop). Both ignore sequences that
  // are no longer held (aborted meanwhile); from inside step() (a callback) they apply at its end. Throws
  // qed::Error on token ids outside the vocabulary.
  void resume(RequestId id, int index, std::vector<int32_t> tokens);
  void stop_held(RequestId id, int index);

  std::vector<TokenEvent> step();
  bool has_unfinished() const { return !requests_.empty(); }
  // Whether step() has anything to run: false when every unfinished sequence is held (waiting for resume).
  bool has_runnable() const { return scheduler_.has_work() || !deferred_aborts_.empty() || !deferred_resumes_.empty(); }
  // Results of finished requests without an on_finish callback, in completion order.
  std::vector<RequestResult> take_finished();

  // Throws unless every block's reference count equals the number of live block-table entries naming it and the
  // free pool holds exactly the unreferenced blocks (the leak property tests call it every step).
  void check_invariants() const;

  const EngineStats& stats() const { return stats_; }
  const BlockManager& block_manager() const { return blocks_; }
  const Scheduler& scheduler() const { return scheduler_; }
  int max_model_len() const { return max_model_len_; }

 private:
  struct SequenceState;
  struct Request;

  void fork_children(Request& request, Sequence& parent);
  void append_token(Request& request, SequenceState& state, const SampledToken& token, std::vector<TokenEvent>& out);
  void finish_sequence(Request& request, SequenceState& state, FinishReason reason, std::string error,
                       std::vector<TokenEvent>& out);
  void complete_if_done(RequestId id);
  void emit(Request& request, TokenEvent event, std::vector<TokenEvent>& out);
  struct Resume {
    RequestId id;
    int index;
    std::optional<std::vector<int32_t>> tokens;  // none: stop_held
  };
  void apply_resume(Resume resume);
  // Speculation hooks: drafts while scheduling, acceptance after the forward.
  void propose_draft(Sequence& seq);
  // Remembers the hidden state of the row the sequence's next token is drawn from (empty unless wanted).
  void keep_hidden(Sequence& seq, size_t scheduled_index, size_t row);
  void verify_draft(Request& request, SequenceState& state, size_t scheduled_index, int num_nodes,
                    std::vector<TokenEvent>& out);

  Backend& backend_;
  EngineConfig config_;
  TokenDecoderFactory decoders_;
  std::vector<int32_t> eos_ids_;
  int max_model_len_ = 0;
  BlockManager blocks_;
  Scheduler scheduler_;
  ModelRunner runner_;
  std::vector<PlannedSample> sample_plan_;  // reused every step
  std::map<RequestId, std::unique_ptr<Request>> requests_;
  std::vector<RequestResult> finished_;
  std::atomic<int64_t> next_request_id_{0};
  bool in_step_ = false;  // abort() from a callback inside step() is deferred to its end
  std::vector<RequestId> deferred_aborts_;
  std::vector<Resume> deferred_resumes_;
  int64_t next_seq_id_ = 0;
  int64_t next_arrival_ = 0;
  std::mt19937_64 seed_rng_;
  EngineStats stats_;
};

}  // namespace qed
