// Early stop for sampled ensembles: the policy (boxed-answer votes, first-N finished, deadline) and the groups that
// apply it to requests running on a real engine (fake backend) — cuts abort only unfinished samples, a decided
// group cuts late joiners, the time bank lends and gets back time.
#include "server/early_stop.h"

#include <gtest/gtest.h>

#include <future>

#include "fake_backend.h"
#include "server/early_stop_groups.h"

namespace qed::server {
namespace {

// EarlyStop with only the named fields set (gcc warns on designated initializers that skip fields).
struct Es {
  EarlyStop value;
  Es& budget(double s) { return value.time_budget_s = s, *this; }
  Es& first(int n) { return value.stop_after_first = n, *this; }
  Es& consensus(int k) { return value.consensus = k, *this; }
  Es& group(std::string g) { return value.group = std::move(g), *this; }
  operator EarlyStop() const { return value; }
};

TimeBankConfig bank(double per_question_s, double max_extra_s, double initial_s) {
  TimeBankConfig c;
  c.per_question_s = per_question_s;
  c.max_extra_s = max_extra_s;
  c.initial_s = initial_s;
  return c;
}

TEST(LastBoxedAnswer, TakesTheLastBoxWithMatchedBraces) {
  EXPECT_EQ(last_boxed_answer("so \\boxed{3} or rather \\boxed{\\frac{1}{2}}."), "\\frac{1}{2}");
  EXPECT_EQ(last_boxed_answer("\\boxed{{a}{b}}"), "{a}{b}");
  EXPECT_EQ(last_boxed_answer("\\boxed{}"), "");
}

TEST(LastBoxedAnswer, NoAnswerWithoutABalancedBox) {
  EXPECT_EQ(last_boxed_answer("the answer is 5"), std::nullopt);
  EXPECT_EQ(last_boxed_answer("\\boxed 5"), std::nullopt);                  // search_boxed needs "\boxed{"
  EXPECT_EQ(last_boxed_answer("\\boxed{5} then \\boxed 6"), std::nullopt);  // the last \boxed decides
  EXPECT_EQ(last_boxed_answer("\\boxed{\\frac{1}{2}"), std::nullopt);       // never closes
  EXPECT_EQ(last_boxed_answer("\\boxed"), std::nullopt);
}

TEST(EarlyStopPolicy, ConsensusFiresOnTheKthAgreeingAnswer) {
  EarlyStopPolicy policy(Es().consensus(3));
  EXPECT_EQ(policy.on_sample_finished("\\boxed{7}"), CutReason::None);
  EXPECT_EQ(policy.on_sample_finished("\\boxed{8}"), CutReason::None);
  EXPECT_EQ(policy.on_sample_finished("no answer at all"), CutReason::None);
  EXPECT_EQ(policy.on_sample_finished("first \\boxed{8}, finally \\boxed{7}"), CutReason::None);
  EXPECT_EQ(policy.on_sample_finished("\\boxed{7}"), CutReason::Consensus);
  EXPECT_EQ(policy.leading_answer(), "7");
  EXPECT_EQ(policy.votes("7"), 3);
  EXPECT_EQ(policy.num_finished(), 5);
}

TEST(EarlyStopPolicy, StopAfterFirstCountsEverySampleThatEndedByItself) {
  EarlyStopPolicy policy(Es().first(2));
  EXPECT_EQ(policy.on_sample_finished("no box"), CutReason::None);
  EXPECT_EQ(policy.on_sample_finished("\\boxed{1}"), CutReason::StopAfterFirst);
}

TEST(EarlyStopPolicy, TheFirstDecisionSticks) {
  EarlyStopPolicy policy(Es().first(1).consensus(1));
  EXPECT_EQ(policy.on_sample_finished("\\boxed{1}"), CutReason::Consensus);  // consensus is checked first
  EXPECT_EQ(policy.on_deadline(), CutReason::Consensus);
  EXPECT_EQ(policy.on_sample_finished("\\boxed{2}"), CutReason::Consensus);
  EXPECT_EQ(policy.num_finished(), 1);

  EarlyStopPolicy late(Es().consensus(2));
  EXPECT_EQ(late.on_deadline(), CutReason::TimeBudget);
  EXPECT_EQ(late.on_sample_finished("\\boxed{1}"), CutReason::TimeBudget);
}

TEST(EarlyStopPolicy, WithoutLimitsItNeverDecides) {
  EarlyStopPolicy policy{EarlyStop{}};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(policy.on_sample_finished("\\boxed{1}"), CutReason::None);
}

// An engine on the fake backend behind an EngineService; requests that would run for many seconds unless cut.
class EarlyStopGroupsTest : public ::testing::Test {
 protected:
  EarlyStopGroupsTest() : backend_(64, 16, 4096), engine_(backend_, EngineConfig{}), service_(engine_) {}

  std::future<RequestResult> submit_endless(int n) {
    SamplingParams p;
    p.n = n;
    p.max_tokens = 60000;  // the fake backend's logits hash the whole context: O(length) per token
    p.ignore_eos = true;
    p.temperature = 1.0f;
    p.seed = 1;
    auto promise = std::make_shared<std::promise<RequestResult>>();
    RequestCallbacks callbacks;
    callbacks.on_finish = [promise](RequestResult&& r) { promise->set_value(std::move(r)); };
    last_id_ = service_.submit({1, 2, 3}, p, std::move(callbacks));
    return promise->get_future();
  }

  static RequestResult wait(std::future<RequestResult>& f) {
    EXPECT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready) << "the cut never came";
    return f.get();
  }

  testing::FakeBackend backend_;
  Engine engine_;
  EngineService service_;
  RequestId last_id_ = -1;
};

TEST_F(EarlyStopGroupsTest, DeadlineCutsEverySampleOfTheRequest) {
  EarlyStopGroups groups(service_, {});
  auto member = groups.join(Es().budget(0.0));
  auto done = submit_endless(3);
  member->attach(last_id_);
  const RequestResult r = wait(done);
  ASSERT_EQ(r.sequences.size(), 3u);
  for (const auto& s : r.sequences) EXPECT_EQ(s.finish_reason, FinishReason::Abort);
  EXPECT_EQ(member->cut_reason(), CutReason::TimeBudget);
  EXPECT_EQ(member->summary()["cut"], "time_budget");
}

TEST_F(EarlyStopGroupsTest, ADecisionInOneRequestCutsTheOtherMembersOfItsGroup) {
  EarlyStopGroups groups(service_, {});
  const EarlyStop config = Es().first(1).group("problem-7");
  auto a = groups.join(config);
  auto b = groups.join(Es().group("problem-7"));  // takes the group's policy
  auto b_done = submit_endless(2);
  b->attach(last_id_);
  EXPECT_EQ(b->cut_reason(), CutReason::None);
  a->on_sample_finished("\\boxed{42}");  // request a's only sample ended by itself
  const RequestResult r = wait(b_done);
  for (const auto& s : r.sequences) EXPECT_EQ(s.finish_reason, FinishReason::Abort);
  EXPECT_EQ(b->cut_reason(), CutReason::StopAfterFirst);
  EXPECT_EQ(b->summary()["answer"], "42");
  EXPECT_EQ(b->summary()["group"], "problem-7");

  // A request joining the decided group is cut as soon as it is attached.
  auto late = groups.join(Es().group("problem-7"));
  auto late_done = submit_endless(1);
  late->attach(last_id_);
  EXPECT_EQ(wait(late_done).sequences[0].finish_reason, FinishReason::Abort);
}

TEST_F(EarlyStopGroupsTest, ConflictingFieldsForAnOpenGroupAreA400) {
  EarlyStopGroups groups(service_, {});
  auto a = groups.join(Es().consensus(4).group("g"));
  try {
    groups.join(Es().consensus(5).group("g"));
    FAIL() << "expected ApiError";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.param(), "qed");
  }
  a.reset();  // the group closes with its last member: the same name may now open with other fields
  EXPECT_NO_THROW(groups.join(Es().consensus(5).group("g")));
}

TEST_F(EarlyStopGroupsTest, TimeBankLendsAtMostMaxExtraAndGetsBackWhatWasNotUsed) {
  EarlyStopGroups groups(service_, bank(100, 30, 50));
  auto q1 = groups.join(Es().group("q1"));
  EXPECT_EQ(q1->summary()["time_budget_s"], 130.0);  // 100 + min(50, 30)
  EXPECT_DOUBLE_EQ(groups.time_bank_s(), 20.0);
  auto q2 = groups.join(Es().group("q2"));  // concurrent: draws from what is left
  EXPECT_EQ(q2->summary()["time_budget_s"], 120.0);
  EXPECT_DOUBLE_EQ(groups.time_bank_s(), 0.0);
  q1.reset();  // used far less than 130 s: nearly all of it is banked
  const double bank = groups.time_bank_s();
  EXPECT_GT(bank, 120.0);
  EXPECT_LE(bank, 130.0);
  // An anonymous request is no question: it neither draws nor returns.
  auto solo = groups.join(Es().consensus(2));
  EXPECT_TRUE(solo->summary()["time_budget_s"].is_null());
  solo.reset();
  EXPECT_DOUBLE_EQ(groups.time_bank_s(), bank);
}

TEST_F(EarlyStopGroupsTest, ARequestBudgetBelowTheBankBudgetWins) {
  EarlyStopGroups groups(service_, bank(100, 0, 0));
  auto q = groups.join(Es().budget(0.0).group("q"));
  auto done = submit_endless(1);
  q->attach(last_id_);
  EXPECT_EQ(wait(done).sequences[0].finish_reason, FinishReason::Abort);
  EXPECT_EQ(q->cut_reason(), CutReason::TimeBudget);
}

}  // namespace
}  // namespace qed::server
