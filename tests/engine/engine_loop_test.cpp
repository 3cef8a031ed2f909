// The threaded step loop: same tokens as the synchronous engine, streaming callbacks, aborts from any thread.
#include "engine/engine_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/error.h"
#include "engine_test_util.h"
#include "fake_backend.h"

namespace qed::testing {
namespace {

EngineConfig small_config() {
  EngineConfig config;
  config.scheduler.max_num_seqs = 8;
  config.scheduler.max_num_batched_tokens = 32;
  return config;
}

SamplingParams seeded(uint64_t seed, int max_tokens) {
  SamplingParams p;
  p.temperature = 0.8f;
  p.seed = seed;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

TEST(EngineLoop, ConcurrentSubmissionsMatchTheSynchronousEngine) {
  std::vector<Job> jobs;
  for (int i = 0; i < 6; ++i) jobs.push_back({random_prompt(static_cast<uint64_t>(i), 3 + 5 * i, 64), seeded(i, 10)});

  FakeBackend sync_backend(64, 4, 128);
  Engine sync_engine(sync_backend, small_config());
  const auto expected = generated_tokens(run_batched(sync_engine, jobs));

  FakeBackend backend(64, 4, 128);
  Engine engine(backend, small_config());
  std::vector<RequestResult> results(jobs.size());
  std::vector<std::string> streamed(jobs.size());
  {
    EngineLoop loop(engine);
    std::vector<std::thread> clients;
    for (size_t i = 0; i < jobs.size(); ++i) {
      clients.emplace_back([&, i] {
        std::vector<int32_t> tokens;
        auto future = loop.generate(jobs[i].prompt, jobs[i].params, [&, i](const TokenEvent& e) {
          for (const auto& t : e.tokens) streamed[i] += std::to_string(t.token) + ",";
        });
        results[i] = future.get();
      });
    }
    for (auto& c : clients) c.join();
  }
  EXPECT_EQ(generated_tokens(results), expected);
  for (size_t i = 0; i < jobs.size(); ++i) {
    std::string joined;
    for (int32_t t : results[i].sequences[0].token_ids) joined += std::to_string(t) + ",";
    EXPECT_EQ(streamed[i], joined);
  }
}

TEST(EngineLoop, AbortFromInsideACallbackStopsTheRequest) {
  FakeBackend backend(64, 4, 128);
  Engine engine(backend, small_config());
  EngineLoop loop(engine);
  std::atomic<RequestId> id{-1};
  std::promise<RequestResult> done;
  RequestCallbacks callbacks;
  callbacks.on_token = [&](const TokenEvent& e) {
    if (e.tokens.size() == 1 && !e.finished()) {
      while (id.load() < 0) std::this_thread::yield();
      loop.abort(id.load());
    }
  };
  callbacks.on_finish = [&](RequestResult&& r) { done.set_value(std::move(r)); };
  id = loop.submit(random_prompt(1, 5, 64), seeded(1, 1000), callbacks);
  const RequestResult r = done.get_future().get();
  EXPECT_EQ(r.sequences[0].finish_reason, FinishReason::Abort);
  EXPECT_LT(r.sequences[0].token_ids.size(), 1000u);
}

TEST(EngineLoop, InvalidSubmissionThrowsToTheCaller) {
  FakeBackend backend(64, 4, 16);
  Engine engine(backend, small_config());
  EngineLoop loop(engine);
  EXPECT_THROW(loop.submit({}, seeded(1, 4), {}), Error);
}

}  // namespace
}  // namespace qed::testing
