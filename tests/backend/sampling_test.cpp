// The reference sampler: exact masks on hand-made logits, distributions over many seeded draws, reproducibility.
#include "backend/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"

namespace qed {
namespace {

std::vector<float> log_probs(std::vector<double> probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(float(std::log(p)));
  return logits;
}

std::vector<bool> kept(const std::vector<float>& logits, const SamplingParams& params,
                       std::vector<int32_t> history = {}) {
  std::vector<float> processed = logits;
  process_logits(processed, params, history);
  std::vector<bool> result;
  for (float x : processed) result.push_back(!std::isinf(x));
  return result;
}

SamplingParams sampling(float temperature = 1.0f) {
  SamplingParams params;
  params.temperature = temperature;
  return params;
}

TEST(Sampling, GreedyPicksTheArgmaxWhateverTheSeed) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f};
  for (uint64_t seed = 0; seed < 20; ++seed) EXPECT_EQ(sample_token(logits, sampling(0), seed, seed, {}).token, 1);
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOncePerToken) {
  std::vector<float> logits = {2.0f, -1.0f, 3.0f};
  SamplingParams params = sampling(0);
  params.repetition_penalty = 2.0f;
  const std::vector<int32_t> history = {0, 1, 0, 0};
  process_logits(logits, params, history);
  EXPECT_EQ(logits, (std::vector<float>{1.0f, -2.0f, 3.0f}));
}

TEST(Sampling, RepetitionPenaltyChangesTheGreedyChoice) {
  const std::vector<float> logits = {2.0f, 1.9f, -1.0f};
  SamplingParams params = sampling(0);
  params.repetition_penalty = 1.2f;
  const std::vector<int32_t> history = {0};
  EXPECT_EQ(sample_token(logits, params, 0, 0, history).token, 1);
}

TEST(Sampling, TopKKeepsTheKLargestAndTiesWithTheKth) {
  const std::vector<float> logits = {1, 5, 3, 5, 2};
  SamplingParams params;
  params.top_k = 2;
  EXPECT_EQ(kept(logits, params), (std::vector<bool>{false, true, false, true, false}));
  params.top_k = 3;
  EXPECT_EQ(kept(logits, params), (std::vector<bool>{false, true, true, true, false}));
  params.top_k = 1;
  EXPECT_EQ(kept({1, 5, 3, 5, 2}, params), (std::vector<bool>{false, true, false, true, false}));
}

TEST(Sampling, TopPDropsTheLowTailWithinOneMinusP) {
  const std::vector<float> logits = log_probs({0.5, 0.3, 0.15, 0.05});
  SamplingParams params;
  params.top_p = 0.75f;  // tail 0.05 + 0.15 = 0.2 <= 0.25 goes; adding 0.3 would exceed it
  EXPECT_EQ(kept(logits, params), (std::vector<bool>{true, true, false, false}));
  params.top_p = 0.9f;
  EXPECT_EQ(kept(logits, params), (std::vector<bool>{true, true, true, false}));
  params.top_p = 0.01f;  // the most likely token always stays
  EXPECT_EQ(kept(logits, params), (std::vector<bool>{true, false, false, false}));
}

TEST(Sampling, MinPDropsTokensBelowAFractionOfTheTopProbability) {
  const std::vector<float> logits = log_probs({0.5, 0.3, 0.15, 0.05});
  SamplingParams params;
  params.min_p = 0.2f;  // threshold 0.1
  EXPECT_EQ(kept(logits, params), (std::vector<bool>{true, true, true, false}));
  params.min_p = 0.5f;  // threshold 0.25
  EXPECT_EQ(kept(logits, params), (std::vector<bool>{true, true, false, false}));
}

TEST(Sampling, TemperatureDividesLogitsBeforeTheFilters) {
  // At temperature 0.25 the probabilities sharpen to ∝ p^4: 0.5^4 dominates, so min_p 0.2 keeps only token 0.
  const std::vector<float> logits = log_probs({0.5, 0.3, 0.15, 0.05});
  SamplingParams params = sampling(0.25f);
  params.min_p = 0.2f;
  EXPECT_EQ(kept(logits, params), (std::vector<bool>{true, false, false, false}));
}

TEST(Sampling, UniformDrawsAreDeterministicAndInTheUnitInterval) {
  double sum = 0;
  for (uint64_t step = 0; step < 100000; ++step) {
    const double u = sampling_uniform(7, step);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);  // sd of the mean is 0.0009
  EXPECT_EQ(sampling_uniform(123, 45), sampling_uniform(123, 45));
  EXPECT_NE(sampling_uniform(123, 45), sampling_uniform(124, 45));
  EXPECT_NE(sampling_uniform(123, 45), sampling_uniform(123, 46));
}

std::vector<int> histogram(const std::vector<float>& logits, const SamplingParams& params, uint64_t seed, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int step = 0; step < draws; ++step)
    ++counts[size_t(sample_token(logits, params, seed, uint64_t(step), {}).token)];
  return counts;
}

// Pearson chi-square of counts against expected probabilities (zero-probability cells must be empty).
double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int draws) {
  double chi = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    const double expected = probs[i] * draws;
    chi += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi;
}

// With deterministic seeds these draws are fixed, so the tests cannot flake; the bound 30 for <= 4 degrees of
// freedom is a p < 1e-5 event for a correct sampler, while a wrong distribution (e.g. temperature or a filter
// mis-applied) gives chi-square in the hundreds at 40000 draws.
constexpr double kChiSquareBound = 30.0;
constexpr int kDraws = 40000;

TEST(Sampling, DrawsFollowTheSoftmaxDistribution) {
  const std::vector<double> probs = {0.1, 0.2, 0.3, 0.4};
  EXPECT_LT(chi_square(histogram(log_probs(probs), sampling(), 42, kDraws), probs, kDraws), kChiSquareBound);
}

TEST(Sampling, TemperatureTwoFlattensTheDistributionToTheSquareRoot) {
  const std::vector<double> raw = {0.1, 0.2, 0.3, 0.4};
  std::vector<double> probs;
  double sum = 0;
  for (double p : raw) sum += std::sqrt(p);
  for (double p : raw) probs.push_back(std::sqrt(p) / sum);
  EXPECT_LT(chi_square(histogram(log_probs(raw), sampling(2.0f), 43, kDraws), probs, kDraws), kChiSquareBound);
}

TEST(Sampling, TopKDrawsRenormaliseOverTheKeptTokens) {
  SamplingParams params;
  params.top_k = 2;
  const std::vector<double> probs = {0, 0, 3.0 / 7, 4.0 / 7};
  EXPECT_LT(chi_square(histogram(log_probs({0.1, 0.2, 0.3, 0.4}), params, 44, kDraws), probs, kDraws), kChiSquareBound);
}

TEST(Sampling, TopPDrawsRenormaliseOverTheNucleus) {
  SamplingParams params;
  params.top_p = 0.75f;
  const std::vector<double> probs = {0.5 / 0.8, 0.3 / 0.8, 0, 0};
  EXPECT_LT(chi_square(histogram(log_probs({0.5, 0.3, 0.15, 0.05}), params, 45, kDraws), probs, kDraws),
            kChiSquareBound);
}

TEST(Sampling, SameSeedGivesTheSameTokensAndAnotherSeedOthers) {
  const std::vector<float> logits = log_probs({0.2, 0.2, 0.2, 0.2, 0.2});
  std::vector<int32_t> a, b, c;
  for (uint64_t step = 0; step < 64; ++step) {
    a.push_back(sample_token(logits, sampling(), 1000, step, {}).token);
    b.push_back(sample_token(logits, sampling(), 1000, step, {}).token);
    c.push_back(sample_token(logits, sampling(), 1001, step, {}).token);
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Sampling, LogprobsAreLogSoftmaxOfTheRawLogitsWithTopAlternatives) {
  const std::vector<float> logits = log_probs({0.1, 0.2, 0.3, 0.4});
  SamplingParams params = sampling(0);
  params.logprobs = 2;
  params.repetition_penalty = 5.0f;  // changes the choice, not the reported logprobs
  const std::vector<int32_t> history = {3};
  const SampledToken sampled = sample_token(logits, params, 0, 0, history);
  EXPECT_EQ(sampled.token, 2);
  EXPECT_NEAR(sampled.logprob, std::log(0.3), 1e-6);
  ASSERT_EQ(sampled.top.size(), 2u);
  EXPECT_EQ(sampled.top[0].token, 3);
  EXPECT_NEAR(sampled.top[0].logprob, std::log(0.4), 1e-6);
  EXPECT_EQ(sampled.top[1].token, 2);
}

TEST(Sampling, InvalidParametersAreRejected) {
  const std::vector<float> logits = {0, 1};
  SamplingParams params;
  params.top_p = 0.0f;
  EXPECT_THROW(sample_token(logits, params, 0, 0, {}), Error);
  params = SamplingParams{};
  params.temperature = -1.0f;
  EXPECT_THROW(sample_token(logits, params, 0, 0, {}), Error);
  params = SamplingParams{};
  params.repetition_penalty = 0.0f;
  EXPECT_THROW(sample_token(logits, params, 0, 0, {}), Error);
}

}  // namespace
}  // namespace qed
