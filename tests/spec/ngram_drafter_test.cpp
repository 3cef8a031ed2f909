#include "spec/ngram_drafter.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace qed::spec {
namespace {

DraftTree propose(const NgramDrafter& drafter, const std::vector<int32_t>& tokens, int max_depth = 100) {
  return drafter.propose({tokens, max_depth, {}});
}

TEST(NgramDrafter, ProposesWhatFollowedTheLatestMatch) {
  NgramDrafter drafter({.num_draft_tokens = 3, .max_ngram = 2, .min_ngram = 1});
  // Suffix [1 2] occurs at 0 (then 3 4 5) and at 5 (then 9 8 1): the latest wins.
  const DraftTree tree = propose(drafter, {1, 2, 3, 4, 5, 1, 2, 9, 8, 1, 2});
  EXPECT_EQ(tree.tokens, (std::vector<int32_t>{9, 8, 1}));
  EXPECT_EQ(tree.parents, (std::vector<int32_t>{-1, 0, 1}));
}

TEST(NgramDrafter, PrefersTheLongestMatchingSuffix) {
  NgramDrafter drafter({.num_draft_tokens = 2, .max_ngram = 3, .min_ngram = 1});
  // 1-gram [7] last occurs at 5 (then 6); the 3-gram [5 6 7] occurs at 0 (then 8 9).
  EXPECT_EQ(propose(drafter, {5, 6, 7, 8, 9, 7, 6, 5, 6, 7}).tokens, (std::vector<int32_t>{8, 9}));
}

TEST(NgramDrafter, StopsAtTheEndOfTheTextAndAtMaxDepth) {
  NgramDrafter drafter({.num_draft_tokens = 4, .max_ngram = 1, .min_ngram = 1});
  EXPECT_EQ(propose(drafter, {3, 4, 3}).tokens, (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(propose(drafter, {3, 4, 5, 6, 3}, 2).tokens, (std::vector<int32_t>{4, 5}));
  EXPECT_TRUE(propose(drafter, {3, 4, 5, 6, 3}, 0).empty());
}

TEST(NgramDrafter, NoMatchMeansNoDraft) {
  NgramDrafter drafter({.num_draft_tokens = 4, .max_ngram = 3, .min_ngram = 2});
  EXPECT_TRUE(propose(drafter, {1, 2, 3, 4, 5, 1}).empty());  // [5 1] and longer never seen before
  EXPECT_TRUE(propose(drafter, {1}).empty());
}

TEST(NgramDrafter, RejectsBadConfig) {
  EXPECT_THROW(NgramDrafter({.num_draft_tokens = 0}), Error);
  EXPECT_THROW(NgramDrafter({.num_draft_tokens = 2, .max_ngram = 1, .min_ngram = 2}), Error);
}

}  // namespace
}  // namespace qed::spec
