// The engine properties again on the real fp32 CPU backend with the tiny HF fixture models: batching, chunked
// prefill, prefix caching and preemption must not change a single greedy token, and must match HF's greedy.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/simple_generator.h"
#include "engine_test_util.h"

namespace qed::testing {
namespace {

const std::string kFixtures = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/";

struct Fixture {
  std::string dir;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> greedy;  // HF transformers' greedy continuations
  int max_new_tokens = 0;
};

Fixture load_fixture(const std::string& name) {
  Fixture f;
  f.dir = kFixtures + name;
  std::ifstream in(f.dir + "/fixture.json");
  const auto json = nlohmann::json::parse(in);
  f.prompts = json.at("prompts").get<std::vector<std::vector<int32_t>>>();
  f.greedy = json.at("greedy").get<std::vector<std::vector<int32_t>>>();
  f.max_new_tokens = json.at("max_new_tokens").get<int>();
  return f;
}

std::unique_ptr<CpuBackend> load_backend(const Fixture& f) {
  CpuBackendOptions options;
  options.num_threads = 2;
  options.block_size = 4;  // small blocks: many page boundaries inside these short prompts
  options.num_blocks = 64;
  return CpuBackend::load(f.dir, options);
}

EngineConfig config_with(int max_seqs, int token_budget, int kv_blocks, bool prefix_caching) {
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
  p.ignore_eos = true;
  return p;
}

std::vector<Job> jobs_of(const Fixture& f, size_t count) {
  std::vector<Job> jobs;
  for (size_t i = 0; i < count && i < f.prompts.size(); ++i) jobs.push_back({f.prompts[i], greedy(f.max_new_tokens)});
  return jobs;
}

std::vector<std::vector<int32_t>> one_at_a_time(Backend& backend, const std::vector<Job>& jobs) {
  std::vector<std::vector<int32_t>> out;
  for (const Job& job : jobs) {
    Engine engine(backend, config_with(1, 4096, 0, false));
    out.push_back(generated_tokens(run_batched(engine, {job}))[0]);
  }
  return out;
}

class EngineCpu : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineCpu, BatchedChunkedGreedyEqualsOneAtATimeAndHf) {
  const Fixture f = load_fixture(GetParam());
  auto backend = load_backend(f);
  const auto jobs = jobs_of(f, f.prompts.size());
  Engine engine(*backend, config_with(8, 16, 0, true));
  const auto batched = generated_tokens(run_batched(engine, jobs));
  EXPECT_EQ(batched, one_at_a_time(*backend, jobs));
  EXPECT_EQ(batched, f.greedy);
}

TEST_P(EngineCpu, PrefixCacheHitGivesIdenticalOutputWithFewerPrefillTokens) {
  const Fixture f = load_fixture(GetParam());
  auto backend = load_backend(f);
  const std::vector<int32_t>& long_prompt = f.prompts[3];
  ASSERT_GE(long_prompt.size(), 40u);
  Job sharer{std::vector<int32_t>(long_prompt.begin(), long_prompt.begin() + 32), greedy(12)};
  sharer.prompt.insert(sharer.prompt.end(), {5, 6, 7});
  const auto reference = one_at_a_time(*backend, {sharer});

  Engine engine(*backend, config_with(4, 64, 0, true));
  run_batched(engine, {Job{long_prompt, greedy(4)}});
  const int64_t before = engine.stats().prefill_tokens;
  const auto hit = run_batched(engine, {sharer});
  EXPECT_EQ(hit[0].num_cached_prompt_tokens, 32);
  EXPECT_EQ(engine.stats().prefill_tokens - before, 3);
  EXPECT_EQ(generated_tokens(hit)[0], reference[0]);
}

TEST_P(EngineCpu, PreemptionUnderTinyKvBudgetKeepsGreedyOutputs) {
  const Fixture f = load_fixture(GetParam());
  auto backend = load_backend(f);
  const auto jobs = jobs_of(f, 3);                        // prompts of 1, 5 and 17 tokens, 24 new tokens each
  Engine engine(*backend, config_with(8, 32, 14, true));  // 56 slots for up to 41-token sequences
  const auto batched = generated_tokens(run_batched(engine, jobs));
  EXPECT_GT(engine.stats().preemptions, 0);
  EXPECT_EQ(batched, one_at_a_time(*backend, jobs));
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
}

TEST_P(EngineCpu, SeededParallelSamplingIsReproducible) {
  const Fixture f = load_fixture(GetParam());
  auto backend = load_backend(f);
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.95f;
  p.n = 3;
  p.seed = 7;
  p.max_tokens = 10;
  p.ignore_eos = true;
  std::vector<Job> jobs = jobs_of(f, 2);
  jobs.push_back({f.prompts[2], p});
  Engine a(*backend, config_with(8, 16, 0, true));
  const auto first = generated_tokens(run_batched(a, jobs));
  Engine b(*backend, config_with(2, 8, 0, false));
  const auto second = generated_tokens(run_batched(b, jobs));
  EXPECT_EQ(first, second);
}

// `qed generate` runs SimpleGenerator today; the engine must draw the same tokens for the same seed when batched.
TEST_P(EngineCpu, BatchedSeededSamplingEqualsSimpleGenerator) {
  const Fixture f = load_fixture(GetParam());
  auto backend = load_backend(f);
  std::vector<Job> jobs;
  std::vector<std::vector<int32_t>> expected;
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    SamplingParams p;
    p.temperature = 0.8f;
    p.top_k = 50;
    p.repetition_penalty = 1.1f;
    p.seed = 100 + i;
    p.max_tokens = 16;
    p.ignore_eos = true;
    jobs.push_back({f.prompts[i], p});
    SimpleGenerator generator(*backend);
    expected.push_back(generator.generate(f.prompts[i], p, *p.seed).tokens);
  }
  Engine engine(*backend, config_with(8, 16, 0, true));
  EXPECT_EQ(generated_tokens(run_batched(engine, jobs)), expected);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineCpu,
                         ::testing::Values("qwen2_gqa_bias", "qwen2_tied_mha", "llama3_rope_scaled"));

}  // namespace
}  // namespace qed::testing
