// The oracle drafter through the engine's verification on the FakeBackend (logits that hash what each row sees):
// records of a run without drafts replayed with p = 1 are all accepted, with p = 0 none, and with p = 0.6 the
// acceptance the engine measures per draft position is p within a statistical bound; outputs always equal the
// run without drafts, greedy and seeded-sampled (n > 1, samples of one prompt told apart by their tokens).
#include <gtest/gtest.h>

#include <cmath>

#include "backend/sampling.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "fake_backend.h"
#include "in_forward_sampling_backend.h"
#include "spec/oracle_drafter.h"

namespace qed::testing {
namespace {

constexpr int kVocab = 64;
constexpr int kDraftLen = 3;

struct Workload {
  std::vector<Job> jobs;
};

Workload greedy_workload(int sequences, int prompt_tokens, int max_tokens) {
  Workload w;
  for (int i = 0; i < sequences; ++i) {
    Job job;
    job.prompt = random_prompt(1000 + static_cast<uint64_t>(i), prompt_tokens, kVocab);
    job.params.temperature = 0;
    job.params.max_tokens = max_tokens;
    job.params.ignore_eos = true;
    w.jobs.push_back(job);
  }
  return w;
}

struct Outcome {
  std::vector<RequestResult> results;
  EngineStats stats;
};

Outcome run(const Workload& w, std::shared_ptr<const spec::Drafter> drafter, bool device_sampling = false) {
  FakeBackend fake(kVocab, 4, 4096, /*eos=*/0);
  InForwardSamplingBackend in_forward(fake);
  Backend& backend = device_sampling ? static_cast<Backend&>(in_forward) : fake;
  EngineConfig config;
  config.scheduler.max_num_seqs = 16;
  config.scheduler.max_num_batched_tokens = 512;
  config.drafter = std::move(drafter);
  Engine engine(backend, config);
  Outcome out;
  out.results = run_batched(engine, w.jobs);
  out.stats = engine.stats();
  if (device_sampling) {
    EXPECT_GT(in_forward.verify_steps_without_logits, 0);
  }
  return out;
}

std::vector<spec::RecordedSequence> records_of(const std::vector<RequestResult>& results) {
  std::vector<spec::RecordedSequence> records;
  for (const RequestResult& r : results) {
    for (const SequenceResult& s : r.sequences) {
      spec::RecordedSequence record{r.prompt_token_ids, r.prompt_token_ids.size()};
      record.tokens.insert(record.tokens.end(), s.token_ids.begin(), s.token_ids.end());
      records.push_back(std::move(record));
    }
  }
  return records;
}

std::shared_ptr<spec::OracleDrafter> oracle(double p, const std::vector<RequestResult>& baseline) {
  return std::make_shared<spec::OracleDrafter>(
      spec::OracleDrafterConfig{.p = p, .draft_len = kDraftLen, .vocab_size = kVocab, .seed = 5}, records_of(baseline));
}

TEST(EngineOracleFake, PAtOneAcceptsEveryDraftTokenAndKeepsTheGreedyOutput) {
  const Workload w = greedy_workload(6, 20, 40);
  const Outcome plain = run(w, nullptr);
  const auto drafter = oracle(1.0, plain.results);
  const Outcome spec = run(w, drafter);
  EXPECT_EQ(generated_tokens(spec.results), generated_tokens(plain.results));
  EXPECT_GT(spec.stats.spec_verify_steps, 0);
  EXPECT_EQ(spec.stats.spec_accepted_tokens, spec.stats.spec_draft_tokens);
  EXPECT_EQ(spec.stats.spec_tested_at_depth, spec.stats.spec_accepted_at_depth);
  // 39 tokens after the first: 3 draft + 1 own per step, so ~10 verify steps per sequence instead of 39 decodes.
  EXPECT_LE(spec.stats.spec_verify_steps, 6 * 10);
  EXPECT_EQ(drafter->counters().without_truth, 0);
}

TEST(EngineOracleFake, PAtZeroAcceptsNothingAndKeepsTheGreedyOutput) {
  const Workload w = greedy_workload(6, 20, 40);
  const Outcome plain = run(w, nullptr);
  const Outcome spec = run(w, oracle(0.0, plain.results));
  EXPECT_EQ(generated_tokens(spec.results), generated_tokens(plain.results));
  EXPECT_GT(spec.stats.spec_draft_tokens, 6 * 30);
  EXPECT_EQ(spec.stats.spec_accepted_tokens, 0);
  ASSERT_EQ(spec.stats.spec_tested_at_depth.size(), 1u);  // the first draft token, always rejected
  EXPECT_EQ(spec.stats.spec_accepted_at_depth, std::vector<int64_t>{0});
}

// Accepted tokens per verify step: sum of p^d over d = 1..3 for full-depth drafts; binomial bounds at 5 sigma
// (a false failure about once in 3 million runs; the run is deterministic anyway, seeded).
TEST(EngineOracleFake, MeasuredAcceptanceAtPointSixIsPWithinStatisticalBounds) {
  const double p = 0.6;
  const Workload w = greedy_workload(16, 12, 300);
  const Outcome plain = run(w, nullptr);
  const Outcome spec = run(w, oracle(p, plain.results));
  EXPECT_EQ(generated_tokens(spec.results), generated_tokens(plain.results));
  const EngineStats& s = spec.stats;
  ASSERT_EQ(s.spec_tested_at_depth.size(), size_t(kDraftLen));
  for (size_t d = 0; d < s.spec_tested_at_depth.size(); ++d) {
    const double tested = static_cast<double>(s.spec_tested_at_depth[d]);
    ASSERT_GT(tested, 300) << "depth " << d + 1;
    const double rate = static_cast<double>(s.spec_accepted_at_depth[d]) / tested;
    EXPECT_NEAR(rate, p, 5 * std::sqrt(p * (1 - p) / tested)) << "depth " << d + 1;
  }
  // Per step A in {0..3}: E[A] = 1.176, Var[A] = 1.377. Drafts cut short near max_tokens (at most the last 3
  // tokens of 300) lower the mean by well under the 5-sigma band.
  const double expected = p + p * p + p * p * p;
  const double steps = static_cast<double>(s.spec_verify_steps);
  const double mean = static_cast<double>(s.spec_accepted_tokens) / steps;
  EXPECT_NEAR(mean, expected, 5 * std::sqrt(1.377 / steps) + 0.02);
  EXPECT_GT(steps, 16 * 100);
}

// What a bf16 near-tie does to a record (the speculative run takes the other token there), made here by editing
// the record: past that point the oracle drafts blind (counted) and acceptance drops, outputs stay exact, and a
// record made by the speculative run itself (bench offline --oracle-passes 2) is accepted in full again.
TEST(EngineOracleFake, ARunThatLeavesItsRecordDraftsBlindAndReRecordingRestoresAcceptance) {
  const Workload w = greedy_workload(4, 16, 80);
  const Outcome plain = run(w, nullptr);
  std::vector<spec::RecordedSequence> records = records_of(plain.results);
  for (spec::RecordedSequence& r : records) {
    // Another continuation from generated token 20 on: the run is off the record from there.
    for (size_t i = r.prompt_tokens + 20; i < r.tokens.size(); ++i) r.tokens[i] = (r.tokens[i] + 1) % kVocab;
  }
  const auto config = spec::OracleDrafterConfig{.p = 1.0, .draft_len = kDraftLen, .vocab_size = kVocab, .seed = 5};
  const auto stale = std::make_shared<spec::OracleDrafter>(config, records);
  const Outcome first = run(w, stale);
  EXPECT_EQ(generated_tokens(first.results), generated_tokens(plain.results));
  EXPECT_GT(stale->counters().without_truth, 4 * 10);
  EXPECT_LT(first.stats.spec_accepted_tokens, first.stats.spec_draft_tokens / 2);

  const auto rerecorded = std::make_shared<spec::OracleDrafter>(config, records_of(first.results));
  const Outcome second = run(w, rerecorded);
  EXPECT_EQ(generated_tokens(second.results), generated_tokens(plain.results));
  EXPECT_EQ(rerecorded->counters().without_truth, 0);
  EXPECT_EQ(second.stats.spec_accepted_tokens, second.stats.spec_draft_tokens);
}

TEST(EngineOracleFake, SeededSamplesOfOnePromptReplayTheirOwnRecords) {
  Workload w;
  for (int i = 0; i < 3; ++i) {
    Job job;
    job.prompt = random_prompt(77 + static_cast<uint64_t>(i), 10, kVocab);
    job.params.temperature = 1.0f;
    job.params.seed = 9 + static_cast<uint64_t>(i);
    job.params.n = 4;
    job.params.max_tokens = 60;
    job.params.ignore_eos = true;
    w.jobs.push_back(job);
  }
  const Outcome plain = run(w, nullptr);
  const auto drafter = oracle(1.0, plain.results);
  const Outcome spec = run(w, drafter);
  EXPECT_EQ(generated_tokens(spec.results), generated_tokens(plain.results));
  // Every proposal is right except where samples of one prompt have not split yet (counted).
  EXPECT_GT(spec.stats.spec_accepted_tokens, 12 * 30);
  EXPECT_GE(spec.stats.spec_accepted_tokens,
            spec.stats.spec_draft_tokens - kDraftLen * drafter->counters().without_truth);
}

// A backend that samples on the device draws every draft row there too (no logits come back), each as the token
// number it would be: greedy and seeded outputs and the acceptance equal host sampling's.
TEST(EngineOracleFake, DraftRowsDrawnOnTheDeviceVerifyLikeHostSampling) {
  Workload w = greedy_workload(6, 12, 60);
  for (int i = 0; i < 2; ++i) {
    Job job;
    job.prompt = random_prompt(500 + static_cast<uint64_t>(i), 9, kVocab);
    job.params.temperature = 1.0f;
    job.params.top_p = 0.9f;
    job.params.seed = 21 + static_cast<uint64_t>(i);
    job.params.n = 3;
    job.params.max_tokens = 50;
    job.params.ignore_eos = true;
    w.jobs.push_back(job);
  }
  const Outcome plain = run(w, nullptr);
  const auto drafter = oracle(0.6, plain.results);
  const Outcome host = run(w, drafter);
  const Outcome device = run(w, drafter, /*device_sampling=*/true);
  EXPECT_EQ(generated_tokens(device.results), generated_tokens(plain.results));
  EXPECT_EQ(generated_tokens(host.results), generated_tokens(plain.results));
  EXPECT_EQ(device.stats.spec_accepted_tokens, host.stats.spec_accepted_tokens);
  EXPECT_EQ(device.stats.spec_accepted_at_depth, host.stats.spec_accepted_at_depth);
  EXPECT_GT(device.stats.spec_accepted_tokens, 50);
}

}  // namespace
}  // namespace qed::testing
