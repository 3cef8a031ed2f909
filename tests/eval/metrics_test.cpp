#include "eval/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qed::eval {

namespace {

// C(n, k) by the multiplicative formula in long double: exact enough for n <= 64.
long double binomial(int n, int k) {
  if (k < 0 || k > n) return 0;
  long double r = 1;
  for (int i = 1; i <= k; ++i) r = r * (n - k + i) / i;
  return r;
}

nlohmann::json row(const std::string& id, int sample, bool correct, const char* answer) {
  nlohmann::json r{{"problem_id", id}, {"sample", sample}, {"correct", correct}};
  r["predicted_answer"] = answer ? nlohmann::json(answer) : nlohmann::json();
  return r;
}

}  // namespace

TEST(PassAtK, MatchesTheBinomialFormulaDirectly) {
  for (int n = 1; n <= 40; n += 3) {
    for (int c = 0; c <= n; ++c) {
      for (int k = 1; k <= n; ++k) {
        double direct = static_cast<double>(1.0L - binomial(n - c, k) / binomial(n, k));
        EXPECT_NEAR(pass_at_k(n, c, k), direct, 1e-12) << "n=" << n << " c=" << c << " k=" << k;
      }
    }
  }
}

TEST(PassAtK, OneSampleIsTheFractionCorrect) {
  EXPECT_DOUBLE_EQ(pass_at_k(10, 3, 1), 0.3);
}

TEST(PassAtK, RejectsImpossibleCounts) {
  EXPECT_THROW(pass_at_k(4, 5, 1), std::exception);
  EXPECT_THROW(pass_at_k(4, 2, 5), std::exception);
}

TEST(MajorityAtK, VotesOverNormalizedAnswersAndIgnoresNoAnswer) {
  auto problems = group_rows({row("p", 0, false, "3"), row("p", 1, true, "\\dfrac{1}{2}"),
                              row("p", 2, true, "\\frac12"), row("p", 3, false, nullptr), row("p", 4, false, nullptr)});
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_FALSE(majority_correct(problems[0], 1));
  std::string majority;
  EXPECT_TRUE(majority_correct(problems[0], 5, &majority));
  EXPECT_EQ(majority, "\\frac{1}{2}");  // the first spelling of the winning value, normalized
}

TEST(Summarize, ReportsAccuracyPassAndMajorityPerK) {
  std::vector<nlohmann::json> rows;
  for (int s = 0; s < 4; ++s) rows.push_back(row("a", s, s == 3, s == 3 ? "1" : "2"));
  for (int s = 0; s < 4; ++s) rows.push_back(row("b", s, true, "7"));
  rows.push_back(row("b", 0, false, "9"));  // a repeated row counts once (the first)
  nlohmann::json summary = summarize(group_rows(rows));
  EXPECT_EQ(summary["problems"], 2);
  EXPECT_EQ(summary["samples"], 8);
  EXPECT_DOUBLE_EQ(summary["accuracy"].get<double>(), (0.25 + 1.0) / 2);
  EXPECT_DOUBLE_EQ(summary["pass@k"]["pass@4"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(summary["pass@k"]["pass@2"].get<double>(), (pass_at_k(4, 1, 2) + 1.0) / 2);
  EXPECT_DOUBLE_EQ(summary["maj@k"]["maj@4"].get<double>(), 0.5);
  EXPECT_EQ(summary["per_problem"][0]["answers"]["2"], 3);
}

}  // namespace qed::eval
