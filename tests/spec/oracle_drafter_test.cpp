#include "spec/oracle_drafter.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"

namespace qed::spec {
namespace {

constexpr int kVocab = 50;

RecordedSequence record(std::vector<int32_t> tokens, size_t prompt_tokens) {
  return {std::move(tokens), prompt_tokens};
}

DraftTree propose(const OracleDrafter& drafter, const std::vector<int32_t>& context, int max_depth = 100) {
  return drafter.propose({context, max_depth, {}});
}

std::vector<int32_t> prefix(const std::vector<int32_t>& tokens, size_t n) {
  return {tokens.begin(), tokens.begin() + static_cast<ptrdiff_t>(n)};
}

TEST(OracleDrafter, PAtOneProposesTheRecordedContinuationAsALinearDraft) {
  const std::vector<int32_t> tokens = {1, 2, 3, 10, 11, 12, 13, 14};
  OracleDrafter drafter({.p = 1.0, .draft_len = 3, .vocab_size = kVocab, .seed = 7}, {record(tokens, 3)});
  const DraftTree tree = propose(drafter, prefix(tokens, 4));
  EXPECT_EQ(tree.tokens, (std::vector<int32_t>{11, 12, 13}));
  EXPECT_EQ(tree.parents, (std::vector<int32_t>{-1, 0, 1}));
  EXPECT_EQ(drafter.name(), "oracle-p1");
}

TEST(OracleDrafter, PAtZeroProposesOnlyWrongTokens) {
  const std::vector<int32_t> tokens = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  OracleDrafter drafter({.p = 0.0, .draft_len = 4, .vocab_size = kVocab, .seed = 1}, {record(tokens, 2)});
  for (size_t known = 3; known + 4 <= tokens.size(); ++known) {
    const DraftTree tree = propose(drafter, prefix(tokens, known));
    ASSERT_EQ(tree.size(), 4u);
    for (size_t i = 0; i < tree.size(); ++i) {
      EXPECT_NE(tree.tokens[i], tokens[known + i]);
      EXPECT_GE(tree.tokens[i], 0);
      EXPECT_LT(tree.tokens[i], kVocab);
    }
  }
}

TEST(OracleDrafter, DepthStopsAtMaxDepthAndAtTheRecordsEnd) {
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6};
  OracleDrafter drafter({.p = 1.0, .draft_len = 3, .vocab_size = kVocab}, {record(tokens, 2)});
  EXPECT_EQ(propose(drafter, prefix(tokens, 3), 2).tokens, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(propose(drafter, prefix(tokens, 4)).tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(propose(drafter, tokens).empty());  // the record ends here: nothing is known after it
}

TEST(OracleDrafter, OffItsRecordASequenceGetsTheRecordsTokensBlindAndIsCounted) {
  OracleDrafter drafter({.p = 1.0, .draft_len = 3, .vocab_size = kVocab}, {record({1, 2, 3, 4, 5, 6}, 2)});
  // Diverged after the prompt: the record's tokens at the same positions, so every step keeps its shape.
  EXPECT_EQ(propose(drafter, {1, 2, 9}).tokens, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_TRUE(propose(drafter, {7, 2, 3}).empty());           // another prompt: nothing to follow
  EXPECT_TRUE(propose(drafter, {1}).empty());                 // shorter than any prompt
  EXPECT_TRUE(propose(drafter, {1, 2, 9, 9, 9, 9}).empty());  // past the record's end
  EXPECT_EQ(drafter.counters().without_truth, 4);
  EXPECT_EQ(propose(drafter, {1, 2, 3}).tokens, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(drafter.counters().without_truth, 4);
  EXPECT_EQ(drafter.counters().proposals, 2);
}

TEST(OracleDrafter, SamplesOfOnePromptAreToldApartByTheirTokens) {
  // Two samples of prompt [1 2]: they share the first generated token and split after it.
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7}, b = {1, 2, 3, 8, 9, 10, 11};
  OracleDrafter drafter({.p = 1.0, .draft_len = 3, .vocab_size = kVocab}, {record(a, 2), record(b, 2)});
  EXPECT_EQ(propose(drafter, prefix(a, 4)).tokens, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(propose(drafter, prefix(b, 4)).tokens, (std::vector<int32_t>{9, 10, 11}));
  EXPECT_EQ(drafter.counters().without_truth, 0);
  // Where both still agree, only their common part is known: the draft follows the first record, counted.
  EXPECT_EQ(propose(drafter, prefix(a, 2)).tokens, (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(propose(drafter, prefix(b, 3)).tokens, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(drafter.counters().without_truth, 2);
}

TEST(OracleDrafter, ProposalsAreDeterministicAndDependOnTheSeed) {
  std::vector<int32_t> tokens = {1, 2};
  for (int i = 0; i < 200; ++i) tokens.push_back(i % kVocab);
  const OracleDrafterConfig config{.p = 0.5, .draft_len = 3, .vocab_size = kVocab, .seed = 3};
  OracleDrafter a(config, {record(tokens, 2)}), b(config, {record(tokens, 2)});
  OracleDrafterConfig other_seed = config;
  other_seed.seed = 4;
  OracleDrafter c(other_seed, {record(tokens, 2)});
  int differ = 0;
  for (size_t known = 2; known + 3 <= tokens.size(); ++known) {
    EXPECT_EQ(propose(a, prefix(tokens, known)).tokens, propose(b, prefix(tokens, known)).tokens);
    EXPECT_EQ(propose(a, prefix(tokens, known)).tokens, propose(a, prefix(tokens, known)).tokens);
    differ += propose(a, prefix(tokens, known)).tokens != propose(c, prefix(tokens, known)).tokens;
  }
  EXPECT_GT(differ, 50);
}

TEST(OracleDrafter, TokensAreRightWithProbabilityPIndependentlyOfPosition) {
  // 8000 coins at p = 0.3: each draft position's share of right tokens within 5 sigma (sigma = 0.0051) of p.
  std::vector<int32_t> tokens = {1};
  for (int i = 0; i < 8003; ++i) tokens.push_back((i * 7 + 3) % kVocab);
  const double p = 0.3;
  OracleDrafter drafter({.p = p, .draft_len = 3, .vocab_size = kVocab, .seed = 11}, {record(tokens, 1)});
  std::vector<int> right(3, 0);
  int both_first_two = 0;
  const int trials = 8000;
  for (int known = 1; known <= trials; ++known) {
    const DraftTree tree = propose(drafter, prefix(tokens, static_cast<size_t>(known)));
    ASSERT_EQ(tree.size(), 3u);
    bool all = true;
    for (size_t i = 0; i < 3; ++i) {
      const bool ok = tree.tokens[i] == tokens[static_cast<size_t>(known) + i];
      right[i] += ok;
      if (i < 2) all = all && ok;
    }
    both_first_two += all;
  }
  const double sigma = std::sqrt(p * (1 - p) / trials);
  for (int count : right) EXPECT_NEAR(double(count) / trials, p, 5 * sigma);
  // Independence of neighbours: P(both right) = p^2.
  EXPECT_NEAR(double(both_first_two) / trials, p * p, 5 * std::sqrt(p * p * (1 - p * p) / trials));
}

TEST(OracleDrafter, RejectsBadSettingsAndRecords) {
  const std::vector<RecordedSequence> ok = {record({1, 2, 3}, 1)};
  EXPECT_THROW(OracleDrafter({.p = 1.5, .vocab_size = kVocab}, ok), Error);
  EXPECT_THROW(OracleDrafter({.p = -0.1, .vocab_size = kVocab}, ok), Error);
  EXPECT_THROW(OracleDrafter({.p = 0.5, .draft_len = 0, .vocab_size = kVocab}, ok), Error);
  EXPECT_THROW(OracleDrafter({.p = 0.5, .vocab_size = 1}, ok), Error);
  EXPECT_THROW(OracleDrafter({.p = 0.5, .vocab_size = kVocab}, {record({1, 2, kVocab}, 1)}), Error);
  EXPECT_THROW(OracleDrafter({.p = 0.5, .vocab_size = kVocab}, {record({1, 2}, 0)}), Error);
}

TEST(OracleDrafter, ParsesPFromTheSpecName) {
  EXPECT_DOUBLE_EQ(parse_oracle_p("oracle-p0.6"), 0.6);
  EXPECT_DOUBLE_EQ(parse_oracle_p("oracle-p1"), 1.0);
  EXPECT_DOUBLE_EQ(parse_oracle_p("oracle-p0"), 0.0);
  EXPECT_LT(parse_oracle_p("ngram"), 0);
  EXPECT_THROW(parse_oracle_p("oracle-p"), Error);
  EXPECT_THROW(parse_oracle_p("oracle-p1.5"), Error);
  EXPECT_THROW(parse_oracle_p("oracle-p0.6x"), Error);
  EXPECT_THROW(parse_oracle_p("oracle-pnan"), Error);
}

}  // namespace
}  // namespace qed::spec
