// Engine properties on the FakeBackend, whose outputs depend on exactly what each position sees in the KV cache.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "fake_backend.h"

namespace qed::testing {
namespace {

constexpr int kVocab = 64;
constexpr int kEos = 0;

EngineConfig config_with(int max_seqs, int token_budget, int kv_blocks = 0, bool prefix_caching = true) {
  EngineConfig config;
  config.scheduler.max_num_seqs = max_seqs;
  config.scheduler.max_num_batched_tokens = token_budget;
  config.num_kv_blocks = kv_blocks;
  config.enable_prefix_caching = prefix_caching;
  return config;
}

SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  return p;
}

std::vector<Job> mixed_jobs(int count, const SamplingParams& base, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  std::vector<Job> jobs;
  for (int i = 0; i < count; ++i) {
    Job job;
    job.prompt = random_prompt(seed * 1000 + static_cast<uint64_t>(i), 1 + static_cast<int>(rng() % 45), kVocab);
    job.params = base;
    job.params.max_tokens = 1 + static_cast<int>(rng() % 24);
    jobs.push_back(job);
  }
  return jobs;
}

// Each job alone on a fresh engine: the reference the batched runs must match token for token.
std::vector<RequestResult> run_one_at_a_time(const std::vector<Job>& jobs, int block_size = 4) {
  std::vector<RequestResult> results;
  for (const Job& job : jobs) {
    FakeBackend backend(kVocab, block_size, 256, kEos);
    Engine engine(backend, config_with(1, 4096, 0, false));
    auto r = run_batched(engine, {job});
    results.push_back(std::move(r[0]));
  }
  return results;
}

TEST(EngineFake, BatchedGreedyEqualsOneAtATimeForMixedLengths) {
  const auto jobs = mixed_jobs(12, greedy(8));
  FakeBackend backend(kVocab, 4, 256, kEos);
  // A small token budget forces chunked prefills to share steps with decodes.
  Engine engine(backend, config_with(8, 16));
  const auto batched = run_batched(engine, jobs);
  EXPECT_GT(backend.max_sequences_in_a_batch(), 1);
  EXPECT_EQ(generated_tokens(batched), generated_tokens(run_one_at_a_time(jobs)));
}

TEST(EngineFake, BatchedSeededSamplingEqualsOneAtATime) {
  SamplingParams params;
  params.temperature = 0.9f;
  params.top_p = 0.9f;
  params.top_k = 20;
  auto jobs = mixed_jobs(10, params, 7);
  for (size_t i = 0; i < jobs.size(); ++i) jobs[i].params.seed = 100 + i;
  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(16, 32));
  EXPECT_EQ(generated_tokens(run_batched(engine, jobs)), generated_tokens(run_one_at_a_time(jobs)));
}

TEST(EngineFake, PrefixCacheHitGivesSameOutputAndSkipsSharedPrefill) {
  const std::vector<int32_t> system = random_prompt(5, 32, kVocab);  // 8 full blocks of 4
  Job first{system, greedy(6)};
  first.prompt.insert(first.prompt.end(), {7, 8, 9});
  Job second{system, greedy(6)};
  second.prompt.insert(second.prompt.end(), {10, 11, 12, 13, 14});

  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(4, 64));
  run_batched(engine, {first});
  const int64_t prefill_before = engine.stats().prefill_tokens;
  const auto second_result = run_batched(engine, {second});
  EXPECT_EQ(second_result[0].num_cached_prompt_tokens, 32);
  EXPECT_EQ(engine.stats().prefill_tokens - prefill_before, static_cast<int64_t>(second.prompt.size()) - 32);
  EXPECT_EQ(engine.stats().cached_tokens, 32);
  EXPECT_EQ(generated_tokens(second_result), generated_tokens(run_one_at_a_time({second})));
}

TEST(EngineFake, PrefillTokenCountIsEveryPromptTokenWithoutPrefixCaching) {
  const auto jobs = mixed_jobs(9, greedy(5), 17);
  int64_t prompt_tokens = 0;
  for (const Job& job : jobs) prompt_tokens += static_cast<int64_t>(job.prompt.size());
  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(4, 7, 0, false));  // chunks of odd sizes, some ending one token short
  run_batched(engine, jobs);
  EXPECT_EQ(engine.stats().prefill_tokens, prompt_tokens);
  EXPECT_EQ(engine.stats().prompt_tokens, prompt_tokens);
}

TEST(EngineFake, IdenticalPromptReusesAllButTheLastBlock) {
  const Job job{random_prompt(9, 17, kVocab), greedy(5)};
  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(4, 64));
  const auto a = run_batched(engine, {job});
  const auto b = run_batched(engine, {job});
  EXPECT_EQ(b[0].num_cached_prompt_tokens, 16);
  EXPECT_EQ(generated_tokens(a), generated_tokens(b));
}

TEST(EngineFake, PreemptionUnderTinyKvBudgetKeepsOutputsIdentical) {
  auto jobs = mixed_jobs(8, greedy(20), 3);
  for (auto& job : jobs) {
    job.params.max_tokens = 20;
    job.params.ignore_eos = true;
  }
  for (bool prefix_caching : {false, true}) {
    FakeBackend backend(kVocab, 4, 256, kEos);
    // 20 blocks of 4 = 80 slots for 8 sequences of up to 65 tokens: constant preemption.
    Engine engine(backend, config_with(8, 32, 20, prefix_caching));
    const auto batched = run_batched(engine, jobs);
    EXPECT_GT(engine.stats().preemptions, 0);
    EXPECT_EQ(generated_tokens(batched), generated_tokens(run_one_at_a_time(jobs))) << prefix_caching;
    EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
  }
}

TEST(EngineFake, ParallelSamplingIsReproducibleAndMatchesSeparateSeededRequests) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.n = 3;
  params.seed = 42;
  params.max_tokens = 12;
  params.ignore_eos = true;
  const std::vector<int32_t> prompt = random_prompt(11, 10, kVocab);  // ends inside a block: forks share it
  std::vector<Job> jobs = mixed_jobs(4, greedy(6), 13);
  jobs.insert(jobs.begin() + 1, Job{prompt, params});

  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(8, 16));
  const auto first = run_batched(engine, jobs);
  FakeBackend backend2(kVocab, 4, 256, kEos);
  Engine engine2(backend2, config_with(8, 16));
  const auto second = run_batched(engine2, jobs);
  EXPECT_EQ(generated_tokens(first), generated_tokens(second));
  EXPECT_GT(backend.copied_blocks(), 0);  // copy-on-write of the shared partial prompt block

  const RequestResult& n3 = first[1];
  ASSERT_EQ(n3.sequences.size(), 3u);
  EXPECT_NE(n3.sequences[0].token_ids, n3.sequences[1].token_ids);
  for (int i = 0; i < 3; ++i) {
    SamplingParams single = params;
    single.n = 1;
    single.seed = derive_sequence_seed(42, i);
    const auto alone = run_one_at_a_time({Job{prompt, single}});
    EXPECT_EQ(n3.sequences[static_cast<size_t>(i)].token_ids, alone[0].sequences[0].token_ids) << i;
  }
}

TEST(EngineFake, StopStringAcrossTokenBoundariesIsNotEmitted) {
  const Job job{random_prompt(21, 6, kVocab), greedy(30)};
  auto with_letters = [&](const SamplingParams& params, std::string* streamed) {
    FakeBackend backend(kVocab, 4, 64, -1);
    Engine engine(backend, config_with(4, 64), letter_decoder_factory());
    RequestCallbacks callbacks;
    callbacks.on_token = [streamed](const TokenEvent& e) { *streamed += e.text; };
    engine.add_request(job.prompt, params, callbacks);
    auto results = run_to_completion(engine);
    return std::move(results.begin()->second);
  };
  std::string full_stream;
  const RequestResult full = with_letters(job.params, &full_stream);
  std::string full_text;
  for (int32_t t : full.sequences[0].token_ids) full_text += letters_of(t);
  ASSERT_EQ(full.sequences[0].text, full_text);
  ASSERT_GE(full_text.size(), 12u);

  // A stop string that starts mid-token and spans the next ones.
  SamplingParams params = job.params;
  const std::string stop = full_text.substr(5, 5);
  params.stop = {stop};
  std::string streamed;
  const RequestResult stopped = with_letters(params, &streamed);
  const std::string expected = full_text.substr(0, full_text.find(stop));
  EXPECT_EQ(stopped.sequences[0].finish_reason, FinishReason::Stop);
  EXPECT_EQ(stopped.sequences[0].text, expected);
  EXPECT_EQ(streamed, expected);
  EXPECT_LT(stopped.sequences[0].token_ids.size(), full.sequences[0].token_ids.size());
}

TEST(EngineFake, FinishReasonsForEosStopTokenAndLength) {
  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(4, 64));
  const Job job{random_prompt(3, 5, kVocab), greedy(40)};
  const auto free_run = run_batched(engine, {Job{job.prompt, [&] {
                                                   auto p = job.params;
                                                   p.ignore_eos = true;
                                                   return p;
                                                 }()}});
  const auto& tokens = free_run[0].sequences[0].token_ids;
  ASSERT_EQ(tokens.size(), 40u);
  EXPECT_EQ(free_run[0].sequences[0].finish_reason, FinishReason::Length);

  SamplingParams by_stop_id = job.params;
  by_stop_id.ignore_eos = true;
  by_stop_id.stop_token_ids = {tokens[7]};
  const auto stopped = run_batched(engine, {Job{job.prompt, by_stop_id}});
  const size_t first = static_cast<size_t>(std::find(tokens.begin(), tokens.end(), tokens[7]) - tokens.begin());
  EXPECT_EQ(stopped[0].sequences[0].finish_reason, FinishReason::Stop);
  EXPECT_EQ(stopped[0].sequences[0].token_ids.size(), first + 1);  // the stop token id is reported, as vLLM does
}

TEST(EngineFake, PromptThatCanNeverFitFinishesWithErrorAndOthersComplete) {
  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(4, 64, 4));  // 16 slots
  std::vector<Job> jobs = {Job{random_prompt(1, 20, kVocab), greedy(4)}, Job{random_prompt(2, 5, kVocab), greedy(4)}};
  jobs[0].params.n = 2;
  const auto results = run_batched(engine, jobs);
  ASSERT_EQ(results[0].sequences.size(), 2u);
  EXPECT_EQ(results[0].sequences[0].finish_reason, FinishReason::Error);
  EXPECT_EQ(results[0].sequences[1].finish_reason, FinishReason::Error);
  EXPECT_NE(results[0].error.find("KV blocks"), std::string::npos);
  EXPECT_NE(results[1].sequences[0].finish_reason, FinishReason::Error);
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
}

TEST(EngineFake, SequenceOutgrowingTheWholeCacheFinishesWithLength) {
  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(4, 64, 4));  // 16 slots
  SamplingParams params = greedy(100);
  params.ignore_eos = true;
  const auto results = run_batched(engine, {Job{random_prompt(1, 8, kVocab), params}});
  EXPECT_EQ(results[0].sequences[0].finish_reason, FinishReason::Length);
  // Slots 0..15 computed, plus the token sampled from the last of them.
  EXPECT_EQ(results[0].sequences[0].token_ids.size(), 9u);
}

TEST(EngineFake, AbortFreesEverythingAndReportsAbort) {
  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(4, 64));
  SamplingParams params = greedy(50);
  params.ignore_eos = true;
  params.n = 2;
  const RequestId id = engine.add_request(random_prompt(1, 9, kVocab), params);
  for (int i = 0; i < 3; ++i) engine.step();
  EXPECT_GT(engine.block_manager().num_used_blocks(), 0);
  engine.abort(id);
  EXPECT_FALSE(engine.has_unfinished());
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
  const auto results = engine.take_finished();
  ASSERT_EQ(results.size(), 1u);
  for (const auto& s : results[0].sequences) EXPECT_EQ(s.finish_reason, FinishReason::Abort);
}

TEST(EngineFake, InvalidRequestsAreRejectedWithAnError) {
  FakeBackend backend(kVocab, 4, 16, kEos);
  Engine engine(backend, config_with(4, 64));
  EXPECT_THROW(engine.add_request({}, greedy(4)), Error);
  EXPECT_THROW(engine.add_request({1, kVocab}, greedy(4)), Error);
  SamplingParams bad = greedy(4);
  bad.n = 0;
  EXPECT_THROW(engine.add_request({1}, bad), Error);
  EXPECT_FALSE(engine.has_unfinished());
}

TEST(EngineFake, TimingsAreOrdered) {
  FakeBackend backend(kVocab, 4, 256, kEos);
  Engine engine(backend, config_with(4, 64));
  SamplingParams params = greedy(5);
  params.ignore_eos = true;
  const auto r = run_batched(engine, {Job{random_prompt(1, 9, kVocab), params}})[0];
  EXPECT_LE(r.queue_s, r.ttft_s);
  ASSERT_EQ(r.sequences[0].token_times_s.size(), 5u);
  EXPECT_EQ(r.sequences[0].token_times_s.front(), r.ttft_s);
  EXPECT_TRUE(std::is_sorted(r.sequences[0].token_times_s.begin(), r.sequences[0].token_times_s.end()));
  EXPECT_LE(r.sequences[0].token_times_s.back(), r.total_s);
}

// 1000 random operations (add with shared prefixes and n ≤ 3, abort, step) on a tiny cache: the block accounting
// holds after every step and nothing leaks once all requests are done.
TEST(EngineFake, RandomAddAbortFinishLeavesNoLeakedBlocks) {
  std::mt19937_64 rng(2024);
  FakeBackend backend(kVocab, 4, 24, kEos);
  Engine engine(backend, config_with(6, 24, 24));
  const std::vector<int32_t> shared = random_prompt(77, 24, kVocab);
  std::vector<RequestId> live;
  int added = 0, aborted = 0;
  for (int op = 0; op < 1000; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 4) {
      std::vector<int32_t> prompt(shared.begin(), shared.begin() + static_cast<long>(rng() % 20));
      const auto tail = random_prompt(rng(), 1 + static_cast<int>(rng() % 30), kVocab);
      prompt.insert(prompt.end(), tail.begin(), tail.end());
      SamplingParams p;
      p.temperature = (rng() % 2) ? 0.0f : 1.0f;
      p.n = 1 + static_cast<int>(rng() % 3);
      p.max_tokens = 1 + static_cast<int>(rng() % 40);
      p.ignore_eos = rng() % 2;
      live.push_back(engine.add_request(prompt, p));
      ++added;
    } else if (kind < 5 && !live.empty()) {
      const size_t victim = rng() % live.size();
      engine.abort(live[victim]);
      live.erase(live.begin() + static_cast<long>(victim));
      ++aborted;
    } else {
      engine.step();
    }
    ASSERT_NO_THROW(engine.check_invariants()) << "op " << op;
  }
  while (engine.has_unfinished()) {
    engine.step();
    ASSERT_NO_THROW(engine.check_invariants());
  }
  EXPECT_EQ(engine.take_finished().size(), static_cast<size_t>(added));
  EXPECT_GT(aborted, 0);
  EXPECT_GT(engine.stats().preemptions, 0);
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
  EXPECT_EQ(engine.block_manager().num_free_blocks(), 24);
}

}  // namespace
}  // namespace qed::testing
