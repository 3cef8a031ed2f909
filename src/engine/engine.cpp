#include "engine/engine.h"

#include <algorithm>
#include <climits>
#include <optional>

#include "core/error.h"

namespace qed {

struct Engine::SequenceState {
  std::unique_ptr<Sequence> seq;
  std::unique_ptr<TokenDecoder> decoder;  // null without a decoder factory: no text
  StopStringMatcher stops;
  SequenceResult result;
};

struct Engine::Request {
  RequestId id = 0;
  SamplingParams params;
  RequestCallbacks callbacks;
  std::vector<std::unique_ptr<SequenceState>> seqs;  // [0] runs the prompt; the others fork from it
  bool forked = false;
  int num_finished = 0;
  Clock::time_point arrival;
  std::optional<Clock::time_point> first_scheduled, first_token;
  int num_cached_prompt_tokens = 0;
  std::string error;
};

namespace {
double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The accepted path ends at `last_node` after `accepted` nodes; the node below it was tested only if the sequence
// still runs and the verified part of the draft (its first `num_nodes` nodes) has one.
void count_draft_depths(const spec::DraftTree& draft, size_t num_nodes, int32_t last_node, int accepted,
                        bool still_running, EngineStats& stats) {
  bool tested_below = false;
  for (size_t i = 0; i < num_nodes && still_running && !tested_below; ++i) tested_below = draft.parents[i] == last_node;
  const size_t depths = static_cast<size_t>(accepted) + (tested_below ? 1 : 0);
  if (stats.spec_tested_at_depth.size() < depths) {
    stats.spec_tested_at_depth.resize(depths, 0);
    stats.spec_accepted_at_depth.resize(depths, 0);
  }
  for (size_t d = 0; d < depths; ++d) ++stats.spec_tested_at_depth[d];
  for (size_t d = 0; d < static_cast<size_t>(accepted); ++d) ++stats.spec_accepted_at_depth[d];
}
}  // namespace

static int kv_blocks_to_use(const Backend& backend, const EngineConfig& config) {
  const int available = backend.kv_layout().num_blocks;
  if (config.num_kv_blocks > available) {
    fail("engine: num_kv_blocks {} exceeds the {} blocks the {} backend allocated", config.num_kv_blocks, available,
         backend.name());
  }
  return config.num_kv_blocks > 0 ? config.num_kv_blocks : available;
}

Engine::Engine(Backend& backend, EngineConfig config, TokenDecoderFactory decoders)
    : backend_(backend),
      config_(std::move(config)),
      decoders_(std::move(decoders)),
      blocks_(kv_blocks_to_use(backend, config_), backend.kv_layout().block_size, config_.enable_prefix_caching),
      scheduler_(config_.scheduler, blocks_),
      runner_(backend),
      seed_rng_(config_.seed) {
  if (config_.synthetic_acceptance) {
    if (!config_.drafter) fail("engine: synthetic acceptance needs a drafter");
    const double p = config_.synthetic_acceptance->p;
    if (!(p >= 0 && p <= 1)) fail("engine: synthetic acceptance p = {} must be in [0, 1]", p);
  }
  if (config_.drafter) scheduler_.set_draft_hook([this](Sequence& seq) { propose_draft(seq); });
  runner_.set_want_hidden(config_.drafter && config_.drafter->wants_hidden());
  eos_ids_ = config_.eos_token_ids.value_or(
      std::vector<int32_t>(backend.config().eos_token_ids.begin(), backend.config().eos_token_ids.end()));
  max_model_len_ = config_.max_model_len > 0                      ? config_.max_model_len
                   : backend.config().max_position_embeddings > 0 ? backend.config().max_position_embeddings
                                                                  : INT_MAX;
}

Engine::~Engine() = default;

void Engine::validate(std::span<const int32_t> prompt, const SamplingParams& params) const {
  if (prompt.empty()) fail("request: prompt has no tokens");
  const int vocab = backend_.config().vocab_size;
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab) {
      fail("request: prompt token {} at index {} is outside the vocabulary [0, {})", prompt[i], i, vocab);
    }
  }
  if (params.n < 1) fail("request: n = {} must be at least 1", params.n);
  if (params.max_tokens < 1) fail("request: max_tokens = {} must be at least 1", params.max_tokens);
  if (params.temperature < 0) fail("request: temperature = {} must be >= 0", params.temperature);
  if (!(params.top_p > 0 && params.top_p <= 1)) fail("request: top_p = {} must be in (0, 1]", params.top_p);
  if (params.top_k < 0) fail("request: top_k = {} must be >= 0", params.top_k);
  if (params.min_p < 0 || params.min_p > 1) fail("request: min_p = {} must be in [0, 1]", params.min_p);
  if (params.repetition_penalty <= 0) {
    fail("request: repetition_penalty = {} must be > 0", params.repetition_penalty);
  }
}

RequestId Engine::add_request(std::vector<int32_t> prompt, const SamplingParams& params, RequestCallbacks callbacks) {
  const RequestId id = reserve_request_id();
  add_request(id, std::move(prompt), params, std::move(callbacks));
  return id;
}

void Engine::add_request(RequestId id, std::vector<int32_t> prompt, const SamplingParams& params,
                         RequestCallbacks callbacks) {
  validate(prompt, params);
  if (requests_.contains(id)) fail("request: id {} is already in use", id);
  auto request = std::make_unique<Request>();
  request->id = id;
  request->params = params;
  request->callbacks = std::move(callbacks);
  request->arrival = Clock::now();
  const uint64_t seed = params.seed.has_value() ? *params.seed : seed_rng_();
  const int64_t order = next_arrival_++;
  for (int i = 0; i < params.n; ++i) {
    auto state = std::make_unique<SequenceState>(
        SequenceState{nullptr, nullptr, StopStringMatcher(params.stop, params.hold), {}});
    state->seq = std::make_unique<Sequence>();
    Sequence& seq = *state->seq;
    seq.seq_id = next_seq_id_++;
    seq.request_id = id;
    seq.index = i;
    seq.tokens = prompt;
    seq.num_prompt_tokens = static_cast<int>(prompt.size());
    seq.seed = derive_sequence_seed(seed, i);
    seq.arrival = request->arrival;
    seq.arrival_order = order;
    if (decoders_) state->decoder = decoders_(params.skip_special_tokens);
    state->result.index = i;
    request->seqs.push_back(std::move(state));
  }
  request->forked = params.n == 1;
  stats_.prompt_tokens += static_cast<int64_t>(prompt.size());
  Request& r = *request;
  requests_.emplace(id, std::move(request));
  if (static_cast<int64_t>(prompt.size()) >= max_model_len_) {
    std::vector<TokenEvent> events;
    const std::string why =
        fmt::format("prompt of {} tokens leaves no room within max_model_len {}", prompt.size(), max_model_len_);
    for (auto& s : r.seqs) finish_sequence(r, *s, FinishReason::Error, why, events);
    complete_if_done(id);
    return;
  }
  scheduler_.add(r.seqs[0]->seq.get());
}

void Engine::abort(RequestId id) {
  if (in_step_) {
    deferred_aborts_.push_back(id);
    return;
  }
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  Request& r = *it->second;
  std::vector<TokenEvent> events;
  for (auto& s : r.seqs) {
    if (!s->seq->is_finished()) finish_sequence(r, *s, FinishReason::Abort, "", events);
  }
  complete_if_done(id);
}

void Engine::abort_all() {
  std::vector<RequestId> ids;
  for (const auto& [id, request] : requests_) ids.push_back(id);
  for (RequestId id : ids) abort(id);
}

void Engine::emit(Request& request, TokenEvent event, std::vector<TokenEvent>& out) {
  if (request.callbacks.on_token) request.callbacks.on_token(event);
  out.push_back(std::move(event));
}

void Engine::finish_sequence(Request& request, SequenceState& state, FinishReason reason, std::string error,
                             std::vector<TokenEvent>& out) {
  Sequence& seq = *state.seq;
  scheduler_.remove(&seq);
  seq.status = SequenceStatus::Finished;
  seq.finish_reason = reason;
  state.result.finish_reason = reason;
  ++request.num_finished;
  if (!error.empty() && request.error.empty()) request.error = error;
  TokenEvent event;
  event.request_id = request.id;
  event.index = seq.index;
  event.finish_reason = reason;
  event.error = std::move(error);
  emit(request, std::move(event), out);
}

void Engine::fork_children(Request& request, Sequence& parent) {
  Sequence* previous = &parent;
  for (size_t i = 1; i < request.seqs.size(); ++i) {
    Sequence& child = *request.seqs[i]->seq;
    child.tokens = parent.tokens;
    blocks_.fork(parent, child);
    scheduler_.add_running_after(previous, &child);
    previous = &child;
  }
  request.forked = true;
}

void Engine::append_token(Request& request, SequenceState& state, const SampledToken& token,
                          std::vector<TokenEvent>& out) {
  Sequence& seq = *state.seq;
  const SamplingParams& params = request.params;
  const auto now = Clock::now();
  if (!request.first_token) request.first_token = now;
  seq.tokens.push_back(token.token);
  state.result.token_ids.push_back(token.token);
  state.result.token_times_s.push_back(seconds_between(request.arrival, now));
  if (params.logprobs >= 0) state.result.logprobs.push_back(token);
  ++stats_.generated_tokens;

  TokenEvent event;
  event.request_id = request.id;
  event.index = seq.index;
  event.tokens.push_back(token);
  const auto contains = [](const std::vector<int32_t>& ids, int32_t t) {
    return std::find(ids.begin(), ids.end(), t) != ids.end();
  };
  FinishReason reason = FinishReason::None;
  if ((!params.ignore_eos && contains(eos_ids_, token.token)) || contains(params.stop_token_ids, token.token)) {
    // The stop token's own text is not part of the output; what was held back is ordinary text.
    reason = FinishReason::Stop;
    if (state.decoder) event.text = state.stops.flush();
  } else {
    StopStringMatcher::Pushed pushed;
    if (state.decoder) pushed = state.stops.push(state.decoder->push(token.token));
    event.text = std::move(pushed.text);
    const bool out_of_room = seq.num_generated() >= params.max_tokens || seq.num_tokens() >= max_model_len_;
    if (pushed.stopped) {
      reason = FinishReason::Stop;
    } else if (pushed.held && !out_of_room) {
      // Paused for its tool; the token just sampled gets its K/V with the chunk resume appends.
      event.held = true;
      ++state.result.num_holds;
      scheduler_.hold(&seq);
    } else if (out_of_room) {
      reason = FinishReason::Length;
      if (state.decoder) {
        StopStringMatcher::Pushed tail = state.stops.push(state.decoder->flush());
        event.text += tail.text;
        if (tail.stopped)
          reason = FinishReason::Stop;
        else
          event.text += state.stops.flush();
      }
    }
  }
  state.result.text += event.text;
  event.finish_reason = reason;
  if (reason != FinishReason::None) {
    scheduler_.remove(&seq);
    seq.status = SequenceStatus::Finished;
    seq.finish_reason = reason;
    state.result.finish_reason = reason;
    ++request.num_finished;
  }
  emit(request, std::move(event), out);
}

void Engine::resume(RequestId id, int index, std::vector<int32_t> tokens) {
  const int vocab = backend_.config().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      fail("resume: token {} at index {} is outside the vocabulary [0, {})", tokens[i], i, vocab);
    }
  }
  if (in_step_) {
    deferred_resumes_.push_back({id, index, std::move(tokens)});
    return;
  }
  apply_resume({id, index, std::move(tokens)});
}

void Engine::stop_held(RequestId id, int index) {
  if (in_step_) {
    deferred_resumes_.push_back({id, index, std::nullopt});
    return;
  }
  apply_resume({id, index, std::nullopt});
}

void Engine::apply_resume(Resume resume) {
  auto it = requests_.find(resume.id);
  if (it == requests_.end() || resume.index < 0 || resume.index >= static_cast<int>(it->second->seqs.size())) return;
  Request& r = *it->second;
  SequenceState& state = *r.seqs[static_cast<size_t>(resume.index)];
  Sequence& seq = *state.seq;
  if (seq.status != SequenceStatus::Held) return;
  std::vector<TokenEvent> out;
  // Text after the hold string within its token was kept back at the hold: it precedes the inserted tokens.
  TokenEvent event;
  event.request_id = r.id;
  event.index = seq.index;
  if (state.decoder) event.text = state.stops.flush();
  if (!resume.tokens) {
    state.result.text += event.text;
    emit(r, std::move(event), out);
    finish_sequence(r, state, FinishReason::Stop, "", out);
    complete_if_done(r.id);
    return;
  }
  std::vector<int32_t>& tokens = *resume.tokens;
  if (state.decoder) {
    for (int32_t t : tokens) event.text += state.decoder->push(t);
  }
  seq.tokens.insert(seq.tokens.end(), tokens.begin(), tokens.end());
  seq.num_inserted_tokens += static_cast<int>(tokens.size());
  seq.last_hidden.clear();  // the drafter's context belongs to the token before the inserted ones
  state.result.token_ids.insert(state.result.token_ids.end(), tokens.begin(), tokens.end());
  state.result.num_inserted_tokens += static_cast<int>(tokens.size());
  state.result.text += event.text;
  event.inserted_tokens = std::move(tokens);
  emit(r, std::move(event), out);
  if (seq.num_tokens() >= max_model_len_) {
    finish_sequence(r, state, FinishReason::Length, "", out);
    complete_if_done(r.id);
    return;
  }
  scheduler_.resume(&seq);
}

void Engine::complete_if_done(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  Request& r = *it->second;
  if (r.num_finished < static_cast<int>(r.seqs.size())) return;
  const auto now = Clock::now();
  RequestResult result;
  result.id = id;
  result.prompt_token_ids.assign(r.seqs[0]->seq->tokens.begin(),
                                 r.seqs[0]->seq->tokens.begin() + r.seqs[0]->seq->num_prompt_tokens);
  for (auto& s : r.seqs) result.sequences.push_back(std::move(s->result));
  result.error = r.error;
  result.queue_s = r.first_scheduled ? seconds_between(r.arrival, *r.first_scheduled) : 0.0;
  result.ttft_s = r.first_token ? seconds_between(r.arrival, *r.first_token) : 0.0;
  result.total_s = seconds_between(r.arrival, now);
  result.num_cached_prompt_tokens = r.num_cached_prompt_tokens;
  auto on_finish = std::move(r.callbacks.on_finish);
  requests_.erase(it);
  if (on_finish) {
    on_finish(std::move(result));
  } else {
    finished_.push_back(std::move(result));
  }
}

std::vector<TokenEvent> Engine::step() {
  std::vector<TokenEvent> out;
  in_step_ = true;
  SchedulerOutput plan = scheduler_.schedule();
  std::vector<RequestId> touched;
  for (Sequence* seq : plan.rejected) {
    Request& r = *requests_.at(seq->request_id);
    const int needed = blocks_.blocks_for_tokens(seq->num_tokens());
    const std::string why = seq->finish_reason == FinishReason::Error
                                ? fmt::format("prompt of {} tokens needs {} KV blocks; the cache has {}",
                                              seq->num_tokens(), needed, blocks_.num_blocks())
                                : std::string();
    // Before the fork the other sequences of the request exist only as placeholders: they end the same way.
    for (auto& s : r.seqs) {
      if (s->seq.get() == seq || (!r.forked && !s->seq->is_finished())) {
        finish_sequence(r, *s, seq->finish_reason, why, out);
      }
    }
    touched.push_back(r.id);
  }
  if (!plan.empty()) {
    const auto now = Clock::now();
    for (const ScheduledSequence& s : plan.scheduled) {
      Request& r = *requests_.at(s.seq->request_id);
      if (!r.first_scheduled) {
        r.first_scheduled = now;
        r.num_cached_prompt_tokens = s.seq->num_computed;
      }
    }
    // Every draw this step will make, so a backend that samples on the device can do them all in the forward.
    sample_plan_.clear();
    for (size_t i = 0; i < plan.scheduled.size(); ++i) {
      const ScheduledSequence& s = plan.scheduled[i];
      if (!s.samples) continue;
      Request& r = *requests_.at(s.seq->request_id);
      const uint64_t step = static_cast<uint64_t>(s.seq->num_generated());  // forks start from the parent's
      if (!r.forked) {
        for (auto& state : r.seqs) sample_plan_.push_back({i, state->seq.get(), &r.params, step});
      } else {
        sample_plan_.push_back({i, s.seq, &r.params, step});
      }
    }
    runner_.execute(plan, sample_plan_);
    scheduler_.on_step_done(plan);
    ++stats_.steps;
    stats_.prefill_tokens += plan.num_prefill_tokens;
    stats_.cached_tokens += plan.num_cached_tokens;
    for (size_t i = 0; i < plan.scheduled.size(); ++i) {
      const ScheduledSequence& s = plan.scheduled[i];
      if (!s.samples) continue;
      Request& r = *requests_.at(s.seq->request_id);
      touched.push_back(r.id);
      if (!r.forked) {
        fork_children(r, *s.seq);
        // Every sequence draws its first token from the prompt's logits, each with its own seed.
        for (auto& state : r.seqs) {
          keep_hidden(*state->seq, i, 0);
          append_token(r, *state, runner_.sample(i, *state->seq, r.params), out);
        }
      } else if (s.num_draft_tokens > 0) {
        verify_draft(r, *r.seqs[static_cast<size_t>(s.seq->index)], i, s.num_draft_tokens, out);
      } else {
        SequenceState& state = *r.seqs[static_cast<size_t>(s.seq->index)];
        keep_hidden(*s.seq, i, 0);
        append_token(r, state, runner_.sample(i, *s.seq, r.params), out);
      }
    }
  }
  stats_.preemptions = scheduler_.num_preemptions();
  for (RequestId id : touched) complete_if_done(id);
  in_step_ = false;
  std::vector<RequestId> aborts;
  aborts.swap(deferred_aborts_);
  for (RequestId id : aborts) abort(id);
  std::vector<Resume> resumes;
  resumes.swap(deferred_resumes_);
  for (Resume& r : resumes) apply_resume(std::move(r));
  return out;
}

void Engine::check_invariants() const {
  std::vector<int> refs(static_cast<size_t>(blocks_.num_blocks()), 0);
  for (const auto& [id, request] : requests_) {
    for (const auto& state : request->seqs) {
      const Sequence& seq = *state->seq;
      for (int32_t b : seq.block_table) ++refs[static_cast<size_t>(b)];
      // Before the fork, the later sequences of a request are placeholders in no queue.
      if (!request->forked && seq.index > 0) continue;
      if (scheduler_.queue_of(&seq) != seq.status) {
        fail("scheduler: sequence {} has status {} but sits in the queue of status {}", seq.seq_id,
             static_cast<int>(seq.status), static_cast<int>(scheduler_.queue_of(&seq)));
      }
      // A held sequence keeps all but its last sampled token computed (fewer when a draft tree's accepted path
      // left some at other slots: they recompute on resume), or lost its blocks to an eviction.
      if (seq.status == SequenceStatus::Held && seq.num_computed > seq.num_tokens() - 1) {
        fail("kv cache: held sequence {} has {} of {} tokens computed", seq.seq_id, seq.num_computed, seq.num_tokens());
      }
      // Between steps a sequence holds exactly the blocks of its computed tokens: the slots of rejected draft
      // tokens were given back.
      if (blocks_.blocks_for_tokens(seq.num_computed) != static_cast<int>(seq.block_table.size())) {
        fail("kv cache: sequence {} holds {} blocks for {} computed tokens", seq.seq_id, seq.block_table.size(),
             seq.num_computed);
      }
    }
  }
  int unreferenced = 0;
  for (int32_t b = 0; b < blocks_.num_blocks(); ++b) {
    if (refs[static_cast<size_t>(b)] != blocks_.ref_count(b)) {
      fail("kv cache: block {} has ref count {} but {} block-table entries", b, blocks_.ref_count(b),
           refs[static_cast<size_t>(b)]);
    }
    unreferenced += refs[static_cast<size_t>(b)] == 0 ? 1 : 0;
  }
  if (unreferenced != blocks_.num_free_blocks()) {
    fail("kv cache: {} unreferenced blocks but {} in the free pool", unreferenced, blocks_.num_free_blocks());
  }
}

std::vector<RequestResult> Engine::take_finished() {
  std::vector<RequestResult> out;
  out.swap(finished_);
  return out;
}

// --- Speculative decoding: drafts are proposed while scheduling (the scheduler appends them to a sequence's chunk
// when budget and KV blocks allow) and verified after the forward by walking the draft tree with the target's own
// draws (see spec/speculative_sampling.h for why that is lossless).

void Engine::propose_draft(Sequence& seq) {
  seq.draft.clear();
  const Request& request = *requests_.at(seq.request_id);
  // Before an n > 1 request forks, its first token comes from the shared prompt row: nothing to verify there.
  if (!request.forked || !request.params.speculate) return;
  // Each accepted node adds one token besides the base model's own: stay within max_tokens and the context.
  const int max_depth =
      std::min(request.params.max_tokens - seq.num_generated(), max_model_len_ - seq.num_tokens()) - 1;
  if (max_depth <= 0) return;
  if (config_.drafter->wants_hidden() && seq.last_hidden.empty()) return;  // recomputed: no context yet
  seq.draft = config_.drafter->propose({seq.tokens, max_depth, seq.last_hidden});
  spec::validate_draft(seq.draft, backend_.config().vocab_size);
  if (seq.draft.max_depth() > max_depth) {
    fail("{} drafter: proposed depth {} beyond the allowed {}", config_.drafter->name(), seq.draft.max_depth(),
         max_depth);
  }
}

void Engine::keep_hidden(Sequence& seq, size_t scheduled_index, size_t row) {
  const std::span<const float> hidden = runner_.hidden(scheduled_index, row);
  seq.last_hidden.assign(hidden.begin(), hidden.end());
}

void Engine::verify_draft(Request& request, SequenceState& state, size_t scheduled_index, int num_nodes,
                          std::vector<TokenEvent>& out) {
  Sequence& seq = *state.seq;
  const int known = seq.num_tokens();  // all computed by this forward; the draft's slots follow
  int32_t node = -1;
  int accepted = 0;
  int contiguous = 0;  // accepted nodes whose K/V landed at the slot the token now occupies
  size_t row = 0;
  while (true) {
    keep_hidden(seq, scheduled_index, row);
    SampledToken token = runner_.sample(scheduled_index, seq, request.params, row);
    // Synthetic acceptance: the coin decides, and an accepted node's token is emitted (its K/V is that token's).
    int32_t synthetic_child = -1;
    if (config_.synthetic_acceptance) {
      const int32_t first_child = seq.draft.first_child(node, static_cast<size_t>(num_nodes));
      if (first_child >= 0 && spec::synthetic_accepts(*config_.synthetic_acceptance, seq.seed, seq.num_tokens())) {
        synthetic_child = first_child;
        token.token = seq.draft.tokens[static_cast<size_t>(first_child)];
        token.top.clear();  // the logprobs stay the sampled token's: a cost model has no meaningful ones
      }
    }
    append_token(request, state, token, out);
    if (seq.status != SequenceStatus::Running) break;  // stopped, out of room or held: where decoding would end
    const int32_t child = config_.synthetic_acceptance
                              ? synthetic_child
                              : seq.draft.child_with_token(node, seq.tokens.back(), static_cast<size_t>(num_nodes));
    if (child < 0) break;
    if (child == accepted && contiguous == accepted) ++contiguous;
    ++accepted;
    node = child;
    row = 1 + static_cast<size_t>(child);
  }
  ++stats_.spec_verify_steps;
  stats_.spec_draft_tokens += num_nodes;
  stats_.spec_accepted_tokens += accepted;
  count_draft_depths(seq.draft, static_cast<size_t>(num_nodes), node, accepted, seq.status == SequenceStatus::Running,
                     stats_);
  seq.draft.clear();
  if (seq.is_finished()) return;  // its blocks are already free
  // Accepted tokens off the contiguous path stay uncomputed and are recomputed with the next chunk.
  seq.num_computed = known + std::min(contiguous, seq.num_tokens() - 1 - known);
  blocks_.commit_computed_blocks(seq);
  blocks_.truncate(seq, seq.num_computed);
}

}  // namespace qed
