// The acceptance rule must leave the output distributed as the target p, whatever the drafter's q. Pearson's
// chi-square over many seeded draws checks that, and the same harness must reject rules that are subtly wrong.
#include "spec/speculative_sampling.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

namespace qed::spec {
namespace {

using Rule = std::function<SpeculativeDraw(std::span<const double>, std::span<const double>, int32_t, double, double)>;

const std::vector<double> kTarget = {0.30, 0.25, 0.20, 0.15, 0.07, 0.03};
const std::vector<double> kDraft = {0.05, 0.10, 0.40, 0.30, 0.10, 0.05};
constexpr int kTrials = 200000;
// Chi-square critical value for 5 degrees of freedom at significance 0.001. The draws are seeded, so the test is
// deterministic; the threshold says how unlucky a correct rule would have to be to fail with another seed.
constexpr double kCritical = 20.52;

struct Outcome {
  double chi_square = 0.0;
  double acceptance = 0.0;
};

Outcome run(const Rule& rule, const std::vector<double>& p, const std::vector<double>& q, uint64_t seed = 11) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<int> counts(p.size(), 0);
  int accepted = 0;
  for (int t = 0; t < kTrials; ++t) {
    const int32_t draft = draw_from_weights(q, uniform(rng));
    const double u1 = uniform(rng), u2 = uniform(rng);
    const SpeculativeDraw draw = rule(p, q, draft, u1, u2);
    ++counts[static_cast<size_t>(draw.token)];
    accepted += draw.accepted ? 1 : 0;
  }
  Outcome out;
  for (size_t i = 0; i < p.size(); ++i) {
    const double expected = p[i] * kTrials;
    out.chi_square += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  out.acceptance = double(accepted) / kTrials;
  return out;
}

TEST(SpeculativeSampling, OutputFollowsTheTargetDistribution) {
  const Outcome out = run(speculative_accept, kTarget, kDraft);
  EXPECT_LT(out.chi_square, kCritical);
  // Accepted with probability sum_i min(p_i, q_i) = 0.05 + 0.10 + 0.20 + 0.15 + 0.07 + 0.03 = 0.60.
  EXPECT_NEAR(out.acceptance, 0.60, 0.005);  // ~4.5 standard deviations of 200k Bernoulli(0.6) draws
}

TEST(SpeculativeSampling, PointMassDraftKeepsTheDraftWithItsTargetProbability) {
  for (int32_t d = 0; d < static_cast<int32_t>(kTarget.size()); ++d) {
    std::vector<double> point(kTarget.size(), 0.0);
    point[static_cast<size_t>(d)] = 1.0;
    const Outcome out = run(speculative_accept, kTarget, point, 100 + static_cast<uint64_t>(d));
    EXPECT_LT(out.chi_square, kCritical) << "draft " << d;
    EXPECT_NEAR(out.acceptance, kTarget[static_cast<size_t>(d)], 0.005) << "draft " << d;
  }
}

TEST(SpeculativeSampling, HarnessRejectsAResidualDrawnFromTheTarget) {
  // Right acceptance, wrong resample: drawing the replacement from p instead of norm(max(0, p - q)) over-weights
  // the tokens the drafter already favours.
  const Rule biased = [](auto p, auto q, int32_t draft, double u1, double u2) -> SpeculativeDraw {
    if (u1 * q[static_cast<size_t>(draft)] < p[static_cast<size_t>(draft)]) return {draft, true};
    return {draw_from_weights(p, u2), false};
  };
  EXPECT_GT(run(biased, kTarget, kDraft).chi_square, 10 * kCritical);
}

TEST(SpeculativeSampling, HarnessRejectsTheInvertedRatio) {
  const Rule biased = [](auto p, auto q, int32_t draft, double u1, double u2) -> SpeculativeDraw {
    return speculative_accept(q, p, draft, u1, u2);  // min(1, q/p): the roles of target and drafter swapped
  };
  EXPECT_GT(run(biased, kTarget, kDraft).chi_square, 10 * kCritical);
}

TEST(SpeculativeSampling, HarnessRejectsAcceptingEveryDraft) {
  const Rule biased = [](auto, auto, int32_t draft, double, double) -> SpeculativeDraw { return {draft, true}; };
  EXPECT_GT(run(biased, kTarget, kDraft).chi_square, 10 * kCritical);
}

TEST(SpeculativeSampling, DrawFromWeightsIsAnInverseCdf) {
  const std::vector<double> w = {0.0, 2.0, 0.0, 1.0};
  EXPECT_EQ(draw_from_weights(w, 0.0), 1);
  EXPECT_EQ(draw_from_weights(w, 0.66), 1);
  EXPECT_EQ(draw_from_weights(w, 0.67), 3);
  EXPECT_EQ(draw_from_weights(w, 0.999999), 3);
  EXPECT_EQ(draw_from_weights(std::vector<double>{0.0, 0.0}, 0.5), -1);
}

}  // namespace
}  // namespace qed::spec
