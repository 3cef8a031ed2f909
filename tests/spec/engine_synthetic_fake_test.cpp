// Synthetic acceptance (the bench-only cost model of speculation at acceptance p) through the engine on the
// FakeBackend: p = 1 accepts every draft token, p = 0 none (and then the output is the run without drafts, token
// for token), p = 0.6 gives per-position acceptance p within a binomial bound; the block accounting holds after
// every step and nothing leaks; the outcome does not depend on how sequences are batched.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "fake_backend.h"
#include "spec/synthetic_acceptance.h"

namespace qed::testing {
namespace {

constexpr int kVocab = 64;
constexpr int kDraftLen = 3;

std::vector<Job> jobs_of(int sequences, int prompt_tokens, int max_tokens, float temperature) {
  std::vector<Job> jobs;
  for (int i = 0; i < sequences; ++i) {
    Job job;
    job.prompt = random_prompt(500 + static_cast<uint64_t>(i), prompt_tokens, kVocab);
    job.params.temperature = temperature;
    job.params.seed = 40 + static_cast<uint64_t>(i);
    job.params.max_tokens = max_tokens;
    job.params.ignore_eos = true;
    jobs.push_back(job);
  }
  return jobs;
}

struct Outcome {
  std::vector<std::vector<int32_t>> tokens;
  EngineStats stats;
};

// p < 0: no drafter. Checks the block accounting after every step and that no block is held at the end.
Outcome run(const std::vector<Job>& jobs, double p, int max_num_seqs = 16, int kv_blocks = 4096) {
  FakeBackend backend(kVocab, 4, kv_blocks, /*eos=*/0);
  EngineConfig config;
  config.scheduler.max_num_seqs = max_num_seqs;  // 16 by default: 64 sequences run in turns
  config.scheduler.max_num_batched_tokens = 512;
  if (p >= 0) {
    config.drafter = std::make_shared<spec::SyntheticDrafter>(p, kDraftLen, kVocab, 7);
    config.synthetic_acceptance = spec::SyntheticAcceptance{.p = p, .seed = 7};
  }
  Engine engine(backend, config);
  std::vector<RequestId> ids;
  for (const Job& job : jobs) ids.push_back(engine.add_request(job.prompt, job.params));
  while (engine.has_unfinished()) {
    engine.step();
    engine.check_invariants();
  }
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
  std::map<RequestId, RequestResult> by_id;
  for (auto& r : engine.take_finished()) by_id.emplace(r.id, std::move(r));
  std::vector<RequestResult> results;
  for (RequestId id : ids) results.push_back(std::move(by_id.at(id)));
  return {generated_tokens(results), engine.stats()};
}

TEST(EngineSyntheticFake, PAtOneAcceptsEveryDraftToken) {
  const auto jobs = jobs_of(6, 20, 40, 0.0f);
  const Outcome out = run(jobs, 1.0);
  EXPECT_GT(out.stats.spec_verify_steps, 0);
  EXPECT_EQ(out.stats.spec_accepted_tokens, out.stats.spec_draft_tokens);
  EXPECT_EQ(out.stats.spec_tested_at_depth, out.stats.spec_accepted_at_depth);
  EXPECT_EQ(out.stats.spec_tested_at_depth.size(), size_t(kDraftLen));
  // 39 tokens after the first, 4 per verify step: 10 steps per sequence.
  EXPECT_LE(out.stats.spec_verify_steps, 6 * 10);
  // Accepted positions carry the draft's tokens (whose K/V the verify forward wrote), not the model's.
  const spec::SyntheticDrafter drafter(1.0, kDraftLen, kVocab, 7);
  int64_t drafted_tokens_emitted = 0;
  for (const auto& t : out.tokens) {
    EXPECT_EQ(t.size(), 40u);
    for (size_t i = 0; i < t.size(); ++i) {
      const std::vector<int32_t> context(20 + i, 1);  // the drafter reads only the context's length
      drafted_tokens_emitted += drafter.propose({context, 1, {}}).tokens.at(0) == t[i];
    }
  }
  EXPECT_GE(drafted_tokens_emitted, out.stats.spec_accepted_tokens);
}

TEST(EngineSyntheticFake, PAtZeroAcceptsNothingAndKeepsTheOutputWithoutDrafts) {
  const auto jobs = jobs_of(6, 20, 40, 1.0f);
  const Outcome plain = run(jobs, -1);
  const Outcome out = run(jobs, 0.0);
  EXPECT_EQ(out.tokens, plain.tokens);
  EXPECT_GT(out.stats.spec_draft_tokens, 6 * 30);
  EXPECT_EQ(out.stats.spec_accepted_tokens, 0);
  EXPECT_EQ(out.stats.spec_accepted_at_depth, std::vector<int64_t>{0});
}

// 5-sigma binomial bounds per draft position (the run is seeded, hence deterministic).
TEST(EngineSyntheticFake, MeasuredAcceptanceAtPointSixIsPWithinStatisticalBounds) {
  const double p = 0.6;
  const Outcome out = run(jobs_of(64, 12, 300, 0.7f), p);
  const EngineStats& s = out.stats;
  ASSERT_EQ(s.spec_tested_at_depth.size(), size_t(kDraftLen));
  for (size_t d = 0; d < s.spec_tested_at_depth.size(); ++d) {
    const double tested = static_cast<double>(s.spec_tested_at_depth[d]);
    ASSERT_GT(tested, 1500) << "depth " << d + 1;
    const double rate = static_cast<double>(s.spec_accepted_at_depth[d]) / tested;
    EXPECT_NEAR(rate, p, 5 * std::sqrt(p * (1 - p) / tested)) << "depth " << d + 1;
  }
  // Per step A in {0..3}: E[A] = 1.176, Var[A] = 1.377 (drafts cut near max_tokens lower it by far less).
  const double steps = static_cast<double>(s.spec_verify_steps);
  EXPECT_NEAR(static_cast<double>(s.spec_accepted_tokens) / steps, p + p * p + p * p * p,
              5 * std::sqrt(1.377 / steps) + 0.02);
}

TEST(EngineSyntheticFake, OutcomeDoesNotDependOnBatchingAndACrampedCacheLeaksNothing) {
  const auto jobs = jobs_of(8, 16, 60, 0.7f);
  const Outcome wide = run(jobs, 0.6, 16);
  const Outcome one_at_a_time = run(jobs, 0.6, 1);
  EXPECT_EQ(wide.tokens, one_at_a_time.tokens);
  EXPECT_EQ(wide.stats.spec_accepted_tokens, one_at_a_time.stats.spec_accepted_tokens);
  // A cache of 40 blocks of 4 tokens holds two of these sequences: preemption and recompute on the way.
  const Outcome cramped = run(jobs, 0.6, 8, 40);
  EXPECT_GT(cramped.stats.preemptions, 0);
  EXPECT_GT(cramped.stats.spec_accepted_tokens, 0);
}

TEST(EngineSyntheticFake, NeedsADrafterAndAValidP) {
  FakeBackend backend(kVocab, 4, 64, 0);
  EngineConfig config;
  config.synthetic_acceptance = spec::SyntheticAcceptance{.p = 0.5, .seed = 1};
  EXPECT_THROW(Engine(backend, config), Error);
  config.drafter = std::make_shared<spec::SyntheticDrafter>(0.5, kDraftLen, kVocab, 1);
  config.synthetic_acceptance->p = 1.5;
  EXPECT_THROW(Engine(backend, config), Error);
  EXPECT_THROW(spec::SyntheticDrafter(-0.1, kDraftLen, kVocab, 1), Error);
  EXPECT_EQ(spec::parse_synthetic_p("synthetic-p0.6"), 0.6);
  EXPECT_EQ(spec::parse_synthetic_p("oracle-p0.6"), -1);
  EXPECT_THROW(spec::parse_synthetic_p("synthetic-p2"), Error);
  EXPECT_THROW(spec::parse_synthetic_p("synthetic-p"), Error);
}

}  // namespace
}  // namespace qed::testing
