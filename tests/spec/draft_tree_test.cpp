#include "spec/draft_tree.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace qed::spec {
namespace {

TEST(DraftTree, LinearDraftIsAChain) {
  const DraftTree tree = DraftTree::linear(std::vector<int32_t>{7, 8, 9});
  EXPECT_EQ(tree.parents, (std::vector<int32_t>{-1, 0, 1}));
  EXPECT_EQ(tree.depth(2), 3);
  EXPECT_EQ(tree.max_depth(), 3);
}

TEST(DraftTree, BeamsShareTheirCommonPrefixes) {
  // RD's beam_to_prefix_tree: [5 6 7], [5 6 8], [9 6] -> 5 shared, 6 shared under 5, 9 is a new root child.
  const DraftTree tree = DraftTree::from_beams({{5, 6, 7}, {5, 6, 8}, {9, 6}});
  EXPECT_EQ(tree.tokens, (std::vector<int32_t>{5, 6, 7, 8, 9, 6}));
  EXPECT_EQ(tree.parents, (std::vector<int32_t>{-1, 0, 1, 1, -1, 4}));
  EXPECT_EQ(tree.child_with_token(1, 8, tree.size()), 3);
  EXPECT_EQ(tree.child_with_token(1, 8, 3), -1);  // outside the first 3 nodes
  EXPECT_EQ(tree.child_with_token(-1, 6, tree.size()), -1);
}

TEST(DraftTree, ValidationNamesTheBadNode) {
  DraftTree tree;
  tree.tokens = {1, 2};
  tree.parents = {-1, 1};
  EXPECT_THROW(validate_draft(tree, 10), Error);
  tree.parents = {-1, 0};
  EXPECT_NO_THROW(validate_draft(tree, 10));
  tree.tokens = {1, 10};
  EXPECT_THROW(validate_draft(tree, 10), Error);
  tree.tokens = {1};
  EXPECT_THROW(validate_draft(tree, 10), Error);
}

TEST(DraftTree, ChunkGetsDepthPositionsAncestorMaskAndOneRowPerNode) {
  const DraftTree tree = DraftTree::from_beams({{5, 6}, {7}});  // nodes 5 (d1), 6 (d2, under 5), 7 (d1)
  SequenceChunk chunk;
  chunk.tokens = {3, 4};  // two uncomputed known tokens; 4 is the root at position 10
  append_draft_to_chunk(tree, 3, 10, chunk);
  EXPECT_EQ(chunk.tokens, (std::vector<int32_t>{3, 4, 5, 6, 7}));
  EXPECT_EQ(chunk.positions, (std::vector<int32_t>{9, 10, 11, 12, 11}));
  const std::vector<uint8_t> expected = {
      1, 0, 0, 0, 0,  //
      1, 1, 0, 0, 0,  //
      1, 1, 1, 0, 0,  //
      1, 1, 1, 1, 0,  //
      1, 1, 0, 0, 1,  // 7 sees the known tokens and itself, not its sibling's branch
  };
  EXPECT_EQ(chunk.attention_mask, expected);
  EXPECT_EQ(chunk.logits_indices, (std::vector<int32_t>{1, 2, 3, 4}));
}

TEST(DraftTree, ChunkKeepsOnlyTheLeadingNodesAskedFor) {
  const DraftTree tree = DraftTree::linear(std::vector<int32_t>{5, 6, 7});
  SequenceChunk chunk;
  chunk.tokens = {4};
  append_draft_to_chunk(tree, 2, 0, chunk);
  EXPECT_EQ(chunk.tokens, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(chunk.positions, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(chunk.logits_indices, (std::vector<int32_t>{0, 1, 2}));
}

}  // namespace
}  // namespace qed::spec
