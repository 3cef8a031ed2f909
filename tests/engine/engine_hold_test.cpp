// Hold/resume (the server-side tool loop's engine primitive) on the FakeBackend, whose outputs depend on exactly
// what every position sees in the KV cache: a sequence paused at a hold string and resumed with inserted tokens
// must generate what a fresh request with the whole context (prompt + generated + inserted) generates, while
// prefilling only the inserted tokens.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "core/error.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "fake_backend.h"

namespace qed::testing {
namespace {

constexpr int kVocab = 64;
const std::vector<int32_t> kToolOutput = {7, 8, 9, 10, 11};

EngineConfig small_config(int kv_blocks = 0) {
  EngineConfig config;
  config.scheduler.max_num_seqs = 8;
  config.scheduler.max_num_batched_tokens = 64;
  config.num_kv_blocks = kv_blocks;
  return config;
}

SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  return p;
}

std::string text_of(const std::vector<int32_t>& tokens) {
  std::string s;
  for (int32_t t : tokens) s += letters_of(t);
  return s;
}

struct LoopOutput {
  std::vector<int32_t> tokens;  // after the prompt: generated and inserted
  std::string text;
  int holds = 0;
  int64_t prefill_tokens = 0;
};

// The client-side loop the hold replaces: stop at the string, append the generated and inserted tokens to the
// prompt, send it again as a new request (fresh engine each round, so nothing is cached).
LoopOutput client_side_loop(const std::vector<int32_t>& prompt, SamplingParams params, const std::string& hold,
                            int max_holds) {
  LoopOutput out;
  std::vector<int32_t> context = prompt;
  params.stop = {hold};
  for (;;) {
    FakeBackend backend(kVocab, 4, 256);
    Engine engine(backend, small_config(), letter_decoder_factory());
    const RequestResult r = run_batched(engine, {Job{context, params}})[0];
    out.prefill_tokens += engine.stats().prefill_tokens;
    const auto& seq = r.sequences[0];
    out.tokens.insert(out.tokens.end(), seq.token_ids.begin(), seq.token_ids.end());
    context.insert(context.end(), seq.token_ids.begin(), seq.token_ids.end());
    params.max_tokens -= static_cast<int>(seq.token_ids.size());
    if (seq.finish_reason != FinishReason::Stop || params.max_tokens <= 0 || out.holds == max_holds) break;
    ++out.holds;
    out.tokens.insert(out.tokens.end(), kToolOutput.begin(), kToolOutput.end());
    context.insert(context.end(), kToolOutput.begin(), kToolOutput.end());
  }
  // A stop string cuts the text (and the rest of its token); the held sequence's text is that of all its tokens.
  out.text = text_of(out.tokens);
  return out;
}

// The same on one engine with hold/resume; resumes from the on_token callback (deferred to the end of the step).
LoopOutput server_side_loop(const std::vector<int32_t>& prompt, SamplingParams params, const std::string& hold,
                            int max_holds, int n = 1) {
  FakeBackend backend(kVocab, 4, 256);
  Engine engine(backend, small_config(), letter_decoder_factory());
  params.hold = {hold};
  params.n = n;
  std::vector<int> holds(static_cast<size_t>(n), 0);
  RequestCallbacks callbacks;
  Engine* e = &engine;
  callbacks.on_token = [&holds, e, max_holds](const TokenEvent& ev) {
    if (!ev.held) return;
    int& h = holds[static_cast<size_t>(ev.index)];
    if (h++ < max_holds) {
      e->resume(ev.request_id, ev.index, kToolOutput);
    } else {
      e->stop_held(ev.request_id, ev.index);
    }
  };
  engine.add_request(prompt, params, callbacks);
  auto results = run_to_completion(engine);
  const auto& r = results.begin()->second;
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
  for (size_t i = 1; i < r.sequences.size(); ++i) {
    EXPECT_EQ(r.sequences[i].token_ids, r.sequences[0].token_ids) << "greedy samples differ";
  }
  LoopOutput out;
  out.tokens = r.sequences[0].token_ids;
  out.text = r.sequences[0].text;
  out.holds = r.sequences[0].num_holds;
  out.prefill_tokens = engine.stats().prefill_tokens;
  EXPECT_EQ(r.sequences[0].num_inserted_tokens, static_cast<int>(kToolOutput.size()) * std::min(out.holds, max_holds));
  return out;
}

// A hold string taken from the free-running text, so the sequence reaches it.
std::string hold_string_of(const std::vector<int32_t>& prompt, int max_tokens) {
  FakeBackend backend(kVocab, 4, 256);
  Engine engine(backend, small_config(), letter_decoder_factory());
  const auto r = run_batched(engine, {Job{prompt, greedy(max_tokens)}})[0];
  return r.sequences[0].text.substr(6, 3);
}

TEST(EngineHold, ResumedSequenceEqualsClientSideLoopAndPrefillsOnlyTheInsertedTokens) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const auto prompt = random_prompt(seed, 5 + static_cast<int>(seed), kVocab);
    const std::string hold = hold_string_of(prompt, 40);
    const LoopOutput client = client_side_loop(prompt, greedy(40), hold, 3);
    const LoopOutput server = server_side_loop(prompt, greedy(40), hold, 3);
    ASSERT_GE(client.holds, 1) << seed;
    EXPECT_EQ(server.tokens, client.tokens) << seed;
    EXPECT_EQ(server.text, client.text) << seed;
    EXPECT_LT(server.prefill_tokens, client.prefill_tokens) << seed;
    // Exactly the prompt plus, per resume, the inserted tokens (the last one is the next decode input).
    EXPECT_EQ(server.prefill_tokens,
              static_cast<int64_t>(prompt.size()) + client.holds * static_cast<int64_t>(kToolOutput.size()))
        << seed;
  }
}

TEST(EngineHold, EverySampleOfAnNGreaterThanOneRequestHoldsAndResumesOnItsOwn) {
  const auto prompt = random_prompt(11, 9, kVocab);
  const std::string hold = hold_string_of(prompt, 30);
  const LoopOutput client = client_side_loop(prompt, greedy(30), hold, 2);
  const LoopOutput server = server_side_loop(prompt, greedy(30), hold, 2, /*n=*/3);
  EXPECT_EQ(server.tokens, client.tokens);
  EXPECT_EQ(server.text, client.text);
}

TEST(EngineHold, HeldSequenceStaysOutOfTheBatchUntilResumedAndKeepsItsBlocks) {
  FakeBackend backend(kVocab, 4, 64);
  Engine engine(backend, small_config(), letter_decoder_factory());
  const auto prompt = random_prompt(3, 7, kVocab);
  SamplingParams params = greedy(40);
  params.hold = {hold_string_of(prompt, 40)};
  std::optional<TokenEvent> held;
  RequestCallbacks callbacks;
  callbacks.on_token = [&held](const TokenEvent& ev) {
    if (ev.held) held = ev;
  };
  const RequestId id = engine.add_request(prompt, params, callbacks);
  while (!held) engine.step();
  EXPECT_TRUE(held->text.ends_with(params.hold[0]));
  EXPECT_TRUE(engine.has_unfinished());
  EXPECT_FALSE(engine.has_runnable());
  const int used = engine.block_manager().num_used_blocks();
  EXPECT_GT(used, 0);
  engine.step();  // nothing to run
  EXPECT_EQ(engine.block_manager().num_used_blocks(), used);
  EXPECT_NO_THROW(engine.check_invariants());
  EXPECT_THROW(engine.resume(id, 0, {kVocab}), Error);
  engine.abort(id);
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
  engine.resume(id, 0, kToolOutput);  // already gone: ignored
  EXPECT_FALSE(engine.has_unfinished());
  const auto results = engine.take_finished();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].sequences[0].finish_reason, FinishReason::Abort);
}

TEST(EngineHold, StopHeldFinishesWithTheTextEndingAtTheHoldString) {
  const auto prompt = random_prompt(5, 6, kVocab);
  const std::string hold = hold_string_of(prompt, 40);
  const LoopOutput server = server_side_loop(prompt, greedy(40), hold, 0);
  EXPECT_EQ(server.holds, 1);
  // The text runs through the hold string (and the rest of the token that completed it), nothing after.
  EXPECT_EQ(server.text, text_of(server.tokens));
  EXPECT_NE(server.text.find(hold), std::string::npos);
  EXPECT_LT(server.text.size() - (server.text.find(hold) + hold.size()), 3u);
}

TEST(EngineHold, HeldSequenceEvictedUnderKvPressureRecomputesAndStillMatches) {
  const auto prompt = random_prompt(13, 6, kVocab);
  const std::string hold = hold_string_of(prompt, 16);
  const LoopOutput reference = client_side_loop(prompt, greedy(16), hold, 1);
  ASSERT_EQ(reference.holds, 1);

  FakeBackend backend(kVocab, 4, 10);
  Engine engine(backend, small_config(10), letter_decoder_factory());  // 40 slots
  SamplingParams params = greedy(16);
  params.hold = {hold};
  int holds = 0;
  bool waiting_for_tool = false;
  RequestCallbacks callbacks;
  callbacks.on_token = [&](const TokenEvent& ev) {
    if (ev.held) waiting_for_tool = ++holds == 1;
    if (ev.held && holds > 1) engine.stop_held(ev.request_id, ev.index);
  };
  const RequestId held_id = engine.add_request(prompt, params, callbacks);
  while (!waiting_for_tool) engine.step();
  // A second request that needs 36 of the 40 slots: the held sequence's blocks must go.
  SamplingParams long_params = greedy(28);
  engine.add_request(random_prompt(14, 8, kVocab), long_params);
  while (engine.stats().preemptions == 0) {
    ASSERT_TRUE(engine.has_runnable());
    engine.step();
    ASSERT_NO_THROW(engine.check_invariants());
  }
  engine.resume(held_id, 0, kToolOutput);
  const auto results = run_to_completion(engine);
  ASSERT_NO_THROW(engine.check_invariants());
  const auto& r = results.at(held_id);
  EXPECT_EQ(r.sequences[0].token_ids, reference.tokens);
  EXPECT_EQ(r.sequences[0].text, reference.text);
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
}

// Random adds (some with a hold string), aborts, resumes of held sequences and steps on a tiny cache: the block
// accounting and the queue membership hold after every operation, held sequences get evicted under pressure
// (and recompute), and nothing leaks.
TEST(EngineHold, RandomHoldResumeAbortLeavesNoLeakedBlocks) {
  std::mt19937_64 rng(77);
  FakeBackend backend(kVocab, 4, 24);
  Engine engine(backend, small_config(24), letter_decoder_factory());
  std::vector<RequestId> live;
  std::set<std::pair<RequestId, int>> held;
  int added = 0;
  for (int op = 0; op < 1500; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 3) {
      SamplingParams p;
      p.temperature = (rng() % 2) ? 0.0f : 1.0f;
      p.n = 1 + static_cast<int>(rng() % 3);
      p.max_tokens = 1 + static_cast<int>(rng() % 40);
      p.hold = {std::string(1, static_cast<char>('a' + rng() % 26))};
      RequestCallbacks callbacks;
      callbacks.on_token = [&held](const TokenEvent& ev) {
        if (ev.held) held.insert({ev.request_id, ev.index});
        if (ev.finished()) held.erase({ev.request_id, ev.index});
      };
      live.push_back(engine.add_request(random_prompt(rng(), 1 + static_cast<int>(rng() % 20), kVocab), p, callbacks));
      ++added;
    } else if (kind < 4 && !live.empty()) {
      const size_t victim = rng() % live.size();
      engine.abort(live[victim]);
      live.erase(live.begin() + static_cast<long>(victim));
    } else if (kind < 6 && !held.empty()) {
      auto it = std::next(held.begin(), static_cast<long>(rng() % held.size()));
      const auto [id, index] = *it;
      held.erase(it);
      if (rng() % 4 == 0) {
        engine.stop_held(id, index);
      } else {
        engine.resume(id, index, random_prompt(rng(), static_cast<int>(rng() % 6), kVocab));
      }
    } else {
      engine.step();
    }
    ASSERT_NO_THROW(engine.check_invariants()) << "op " << op;
  }
  while (engine.has_unfinished()) {
    for (const auto& [id, index] : std::set(held)) engine.resume(id, index, {});
    held.clear();
    engine.step();
    ASSERT_NO_THROW(engine.check_invariants());
  }
  EXPECT_EQ(engine.take_finished().size(), static_cast<size_t>(added));
  EXPECT_GT(engine.stats().preemptions, 0);
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
}

}  // namespace
}  // namespace qed::testing
