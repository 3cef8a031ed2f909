// The engine's device-sampling path (Backend::can_sample_on_device, ForwardBatch::device_samples) checked on the
// CPU: a backend that "samples on the device" by running the reference sampler inside forward() must make the
// engine produce exactly the tokens of host sampling, including the first token of n > 1 requests (each fork with
// its own seed from the prompt's one row) and steps where one request's parameters force the host path.
#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "in_forward_sampling_backend.h"

namespace qed::testing {
namespace {

std::unique_ptr<CpuBackend> fixture_backend() {
  CpuBackendOptions options;
  options.num_threads = 2;
  options.block_size = 4;
  options.num_blocks = 96;
  return CpuBackend::load(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_gqa_bias", options);
}

std::vector<Job> jobs(int vocab) {
  SamplingParams sampled;
  sampled.temperature = 0.8f;
  sampled.top_p = 0.9f;
  sampled.max_tokens = 10;
  sampled.seed = 5;
  sampled.n = 3;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  greedy.max_tokens = 7;
  SamplingParams filtered = sampled;
  filtered.n = 1;
  filtered.top_k = 20;
  filtered.min_p = 0.05f;
  filtered.seed = 9;
  filtered.logprobs = 2;
  return {{random_prompt(1, 11, vocab), sampled},
          {random_prompt(2, 5, vocab), greedy},
          {random_prompt(3, 17, vocab), filtered}};
}

TEST(DeviceSampling, EngineTokensEqualHostSampling) {
  auto cpu = fixture_backend();
  const int vocab = cpu->config().vocab_size;
  Engine host_engine(*cpu, EngineConfig{});
  const auto want = generated_tokens(run_batched(host_engine, jobs(vocab)));

  auto cpu2 = fixture_backend();
  InForwardSamplingBackend device(*cpu2);
  Engine device_engine(device, EngineConfig{});
  const auto results = run_batched(device_engine, jobs(vocab));
  EXPECT_EQ(generated_tokens(results), want);
  EXPECT_EQ(device.device_draws, 3 * 10 + 7 + 10);  // every token was drawn in the forward
  ASSERT_EQ(results[2].sequences.at(0).logprobs.size(), 10u);
  EXPECT_EQ(results[2].sequences[0].logprobs[0].top.size(), 2u);
}

TEST(DeviceSampling, HostOnlyParametersFallBackForTheirSteps) {
  auto cpu = fixture_backend();
  const int vocab = cpu->config().vocab_size;
  std::vector<Job> with_penalty = jobs(vocab);
  with_penalty[1].params.repetition_penalty = 1.3f;  // needs history: the steps it is in sample on the host
  Engine host_engine(*cpu, EngineConfig{});
  const auto want = generated_tokens(run_batched(host_engine, with_penalty));

  auto cpu2 = fixture_backend();
  InForwardSamplingBackend device(*cpu2);
  Engine device_engine(device, EngineConfig{});
  EXPECT_EQ(generated_tokens(run_batched(device_engine, with_penalty)), want);
  EXPECT_LT(device.device_draws, 3 * 10 + 7 + 10);
}

}  // namespace
}  // namespace qed::testing
