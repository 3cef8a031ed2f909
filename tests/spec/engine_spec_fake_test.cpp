// Speculative decoding in the engine on the FakeBackend, whose logits hash exactly what each row sees (tokens and
// positions, through the block table and the attention mask): any slot, position, mask or rollback mistake in the
// verification path changes tokens. Outputs with drafts must equal outputs without, token for token, for greedy and
// for seeded sampling, with stops, EOS, max_tokens, n > 1, non-speculating neighbours and preemption.
#include <gtest/gtest.h>

#include <random>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "fake_backend.h"
#include "spec/drafter.h"

namespace qed::testing {
namespace {

constexpr int kVocab = 64;
constexpr int kEos = 0;

// Proposes the backend's greedy continuation as one beam and a corrupted copy as another, in an order that varies,
// so accepted paths run both through the first (contiguous) beam and through later branches of the tree.
class GreedyOracleDrafter final : public spec::Drafter {
 public:
  GreedyOracleDrafter(const FakeBackend& backend, int depth) : backend_(backend), depth_(depth) {}
  std::string name() const override { return "greedy-oracle"; }
  spec::DraftTree propose(const spec::DraftContext& context) const override {
    std::mt19937_64 rng(context.tokens.size() * 7919 + static_cast<uint64_t>(context.tokens.back()));
    const int depth = std::min(depth_, context.max_depth);
    std::vector<int32_t> exact, noisy;
    std::vector<int32_t> a(context.tokens.begin(), context.tokens.end()), b = a;
    for (int d = 0; d < depth; ++d) {
      exact.push_back(backend_.greedy_token(a));
      a.push_back(exact.back());
      int32_t t = backend_.greedy_token(b);
      if (rng() % 3 == 0) t = static_cast<int32_t>((t + 1 + rng() % (kVocab - 1)) % kVocab);
      noisy.push_back(t);
      b.push_back(t);
    }
    if (rng() % 4 == 0) return {};  // some steps without a draft
    return rng() % 2 ? spec::DraftTree::from_beams({noisy, exact}) : spec::DraftTree::from_beams({exact, noisy});
  }

 private:
  const FakeBackend& backend_;
  int depth_;
};

EngineConfig config_with(int max_seqs, int token_budget, int kv_blocks, std::shared_ptr<const spec::Drafter> drafter) {
  EngineConfig config;
  config.scheduler.max_num_seqs = max_seqs;
  config.scheduler.max_num_batched_tokens = token_budget;
  config.num_kv_blocks = kv_blocks;
  config.drafter = std::move(drafter);
  return config;
}

// Adds all jobs, steps to the end checking the block accounting after every step.
std::vector<RequestResult> run_checked(Engine& engine, const std::vector<Job>& jobs) {
  std::vector<RequestId> ids;
  for (const Job& job : jobs) ids.push_back(engine.add_request(job.prompt, job.params));
  while (engine.has_unfinished()) {
    engine.step();
    engine.check_invariants();
  }
  std::map<RequestId, RequestResult> by_id;
  for (auto& r : engine.take_finished()) by_id.emplace(r.id, std::move(r));
  std::vector<RequestResult> out;
  for (RequestId id : ids) out.push_back(std::move(by_id.at(id)));
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
  return out;
}

std::vector<Job> varied_jobs(int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Job> jobs;
  for (int i = 0; i < count; ++i) {
    Job job;
    job.prompt = random_prompt(seed * 100 + static_cast<uint64_t>(i), 1 + static_cast<int>(rng() % 30), kVocab);
    SamplingParams& p = job.params;
    p.temperature = rng() % 2 ? 0.0f : 1.0f;
    p.seed = rng();
    p.n = 1 + static_cast<int>(rng() % 2);
    p.max_tokens = 1 + static_cast<int>(rng() % 30);
    p.ignore_eos = rng() % 3 == 0;
    if (rng() % 3 == 0) p.stop = {"kkk", "dd"};
    if (rng() % 4 == 0) p.stop_token_ids = {static_cast<int32_t>(1 + rng() % (kVocab - 1))};
    if (rng() % 3 == 0) p.logprobs = 2;
    p.speculate = rng() % 5 != 0;
    jobs.push_back(job);
  }
  return jobs;
}

void expect_same_outputs(const std::vector<RequestResult>& expected, const std::vector<RequestResult>& actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t r = 0; r < expected.size(); ++r) {
    ASSERT_EQ(expected[r].sequences.size(), actual[r].sequences.size());
    for (size_t s = 0; s < expected[r].sequences.size(); ++s) {
      const SequenceResult& e = expected[r].sequences[s];
      const SequenceResult& a = actual[r].sequences[s];
      EXPECT_EQ(e.token_ids, a.token_ids) << "request " << r << " sequence " << s;
      EXPECT_EQ(e.text, a.text) << "request " << r << " sequence " << s;
      EXPECT_EQ(e.finish_reason, a.finish_reason) << "request " << r << " sequence " << s;
      ASSERT_EQ(e.logprobs.size(), a.logprobs.size());
      for (size_t i = 0; i < e.logprobs.size(); ++i) {
        EXPECT_EQ(e.logprobs[i].token, a.logprobs[i].token);
        EXPECT_EQ(e.logprobs[i].logprob, a.logprobs[i].logprob);
      }
    }
  }
}

TEST(EngineSpecFake, DraftTreesLeaveGreedyAndSeededOutputsUnchanged) {
  const auto jobs = varied_jobs(24, 3);
  FakeBackend plain_backend(kVocab, 4, 512, kEos);
  Engine plain(plain_backend, config_with(8, 64, 0, nullptr), letter_decoder_factory());
  const auto expected = run_checked(plain, jobs);

  FakeBackend backend(kVocab, 4, 512, kEos);
  Engine engine(backend, config_with(8, 64, 0, std::make_shared<GreedyOracleDrafter>(backend, 4)),
                letter_decoder_factory());
  expect_same_outputs(expected, run_checked(engine, jobs));
  const EngineStats& stats = engine.stats();
  EXPECT_GT(stats.spec_verify_steps, 20);
  EXPECT_GT(stats.spec_accepted_tokens, 20);
  EXPECT_GT(stats.spec_draft_tokens, stats.spec_accepted_tokens);  // wrong branches were verified and rejected
  EXPECT_LT(stats.steps, plain.stats().steps);
  // Per-depth counts of the accepted paths through the trees: they add up to the accepted total, a depth is
  // tested at most as often as the one above it was accepted, and never accepted more often than tested.
  ASSERT_EQ(stats.spec_tested_at_depth.size(), stats.spec_accepted_at_depth.size());
  int64_t accepted = 0;
  for (size_t d = 0; d < stats.spec_tested_at_depth.size(); ++d) {
    accepted += stats.spec_accepted_at_depth[d];
    EXPECT_LE(stats.spec_accepted_at_depth[d], stats.spec_tested_at_depth[d]);
    EXPECT_LE(stats.spec_tested_at_depth[d], d == 0 ? stats.spec_verify_steps : stats.spec_accepted_at_depth[d - 1]);
  }
  EXPECT_EQ(accepted, stats.spec_accepted_tokens);
}

TEST(EngineSpecFake, BatchOneWithDraftsEqualsBatchOneWithout) {
  for (const Job& job : varied_jobs(8, 5)) {
    FakeBackend plain_backend(kVocab, 4, 256, kEos);
    Engine plain(plain_backend, config_with(1, 4096, 0, nullptr));
    FakeBackend backend(kVocab, 4, 256, kEos);
    Engine engine(backend, config_with(1, 4096, 0, std::make_shared<GreedyOracleDrafter>(backend, 3)));
    expect_same_outputs(run_checked(plain, {job}), run_checked(engine, {job}));
  }
}

TEST(EngineSpecFake, TightTokenBudgetAndKvCacheCutDraftsWithoutChangingOutputs) {
  const auto jobs = varied_jobs(16, 9);
  FakeBackend plain_backend(kVocab, 4, 512, kEos);
  Engine plain(plain_backend, config_with(8, 64, 0, nullptr));
  const auto expected = run_checked(plain, jobs);
  // 20 blocks of 4 slots for sequences of up to 60 tokens, 10 tokens per step: drafts are cut or dropped, and
  // sequences are preempted and recomputed.
  FakeBackend backend(kVocab, 4, 20, kEos);
  Engine engine(backend, config_with(6, 10, 20, std::make_shared<GreedyOracleDrafter>(backend, 5)));
  expect_same_outputs(expected, run_checked(engine, jobs));
  EXPECT_GT(engine.stats().preemptions, 0);
  EXPECT_GT(engine.stats().spec_accepted_tokens, 0);
}

// Held sequences (paused at a tool call) do not speculate; a hold string inside an accepted run pauses the sequence
// exactly where decoding without drafts would, and the resumed continuation is unchanged.
std::vector<RequestResult> run_with_tool_calls(Engine& engine, const std::vector<Job>& jobs) {
  std::vector<RequestId> ids;
  for (const Job& job : jobs) ids.push_back(engine.add_request(job.prompt, job.params));
  std::map<std::pair<RequestId, int>, int> holds;
  while (engine.has_unfinished()) {
    for (const TokenEvent& event : engine.step()) {
      if (!event.held) continue;
      int& count = holds[{event.request_id, event.index}];
      if (++count <= 2) {
        engine.resume(event.request_id, event.index, {7, 8, 9, 10, 11});
      } else {
        engine.stop_held(event.request_id, event.index);
      }
    }
    engine.check_invariants();
  }
  std::map<RequestId, RequestResult> by_id;
  for (auto& r : engine.take_finished()) by_id.emplace(r.id, std::move(r));
  std::vector<RequestResult> out;
  for (RequestId id : ids) out.push_back(std::move(by_id.at(id)));
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
  return out;
}

TEST(EngineSpecFake, HoldInsideAnAcceptedRunPausesWhereDecodingWould) {
  auto jobs = varied_jobs(16, 21);
  for (Job& job : jobs) {
    job.params.hold = {"dd", "ggg"};
    job.params.max_tokens = 40;
  }
  FakeBackend plain_backend(kVocab, 4, 512, kEos);
  Engine plain(plain_backend, config_with(8, 64, 0, nullptr), letter_decoder_factory());
  const auto expected = run_with_tool_calls(plain, jobs);
  FakeBackend backend(kVocab, 4, 512, kEos);
  Engine engine(backend, config_with(8, 64, 0, std::make_shared<GreedyOracleDrafter>(backend, 4)),
                letter_decoder_factory());
  const auto actual = run_with_tool_calls(engine, jobs);
  expect_same_outputs(expected, actual);
  int holds = 0;
  for (const auto& r : actual) {
    for (const auto& s : r.sequences) holds += s.num_holds;
  }
  EXPECT_GT(holds, 5);
  EXPECT_GT(engine.stats().spec_accepted_tokens, 0);
}

// Random adds (shared prefixes, n <= 3) and aborts with speculation on a tiny cache: the block accounting holds
// after every step (no sequence keeps the slots of rejected drafts) and nothing leaks at the end.
TEST(EngineSpecFake, RandomAddAbortWithDraftsLeavesNoLeakedBlocks) {
  std::mt19937_64 rng(77);
  FakeBackend backend(kVocab, 4, 24, kEos);
  Engine engine(backend, config_with(6, 24, 24, std::make_shared<GreedyOracleDrafter>(backend, 4)));
  const std::vector<int32_t> shared = random_prompt(78, 24, kVocab);
  std::vector<RequestId> live;
  for (int op = 0; op < 600; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 3) {
      std::vector<int32_t> prompt(shared.begin(), shared.begin() + static_cast<long>(rng() % 20));
      const auto tail = random_prompt(rng(), 1 + static_cast<int>(rng() % 20), kVocab);
      prompt.insert(prompt.end(), tail.begin(), tail.end());
      SamplingParams p;
      p.temperature = (rng() % 2) ? 0.0f : 1.0f;
      p.n = 1 + static_cast<int>(rng() % 3);
      p.max_tokens = 1 + static_cast<int>(rng() % 30);
      live.push_back(engine.add_request(prompt, p));
    } else if (kind < 4 && !live.empty()) {
      const size_t victim = rng() % live.size();
      engine.abort(live[victim]);
      live.erase(live.begin() + static_cast<long>(victim));
    } else {
      engine.step();
    }
    ASSERT_NO_THROW(engine.check_invariants()) << "op " << op;
  }
  while (engine.has_unfinished()) {
    engine.step();
    ASSERT_NO_THROW(engine.check_invariants());
  }
  EXPECT_GT(engine.stats().spec_accepted_tokens, 0);
  EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
}

}  // namespace
}  // namespace qed::testing
