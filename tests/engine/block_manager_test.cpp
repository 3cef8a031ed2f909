#include "engine/block_manager.h"

#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"

namespace qed {
namespace {

Sequence make_sequence(int64_t id, int num_tokens, int first_token = 0) {
  Sequence seq;
  seq.seq_id = id;
  seq.tokens.resize(static_cast<size_t>(num_tokens));
  std::iota(seq.tokens.begin(), seq.tokens.end(), first_token);
  seq.num_prompt_tokens = num_tokens;
  return seq;
}

// Simulates the scheduler's admission + forward of a whole prompt.
void admit_and_compute(BlockManager& blocks, Sequence& seq) {
  const auto prefix = blocks.find_cached_prefix(seq.tokens);
  blocks.allocate(seq, prefix, seq.num_tokens());
  seq.num_computed = seq.num_tokens();
  blocks.commit_computed_blocks(seq);
}

TEST(KvBudget, BytesPerBlockCountLayersKvHeadsHeadDimAndBothKAndV) {
  ModelConfig config;
  config.num_layers = 48;
  config.num_kv_heads = 8;
  config.head_dim = 128;
  // 14B-shaped: 192 KiB per token in bf16 (design.md), so a 16-token block is 3 MiB.
  EXPECT_EQ(kv_block_bytes(config, 1, 2), 192u * 1024u);
  EXPECT_EQ(kv_block_bytes(config, 16, 2), 3u * 1024u * 1024u);
  EXPECT_EQ(kv_blocks_for_budget(size_t(30) << 20, config, 16, 2), 10);
  EXPECT_EQ(kv_blocks_for_budget(size_t(1) << 20, config, 16, 2), 0);
}

TEST(BlockManager, AllocatesCoveringBlocksAndFreesThemAll) {
  BlockManager blocks(8, 4, true);
  Sequence seq = make_sequence(1, 9);
  ASSERT_TRUE(blocks.can_allocate({}, 9));
  blocks.allocate(seq, {}, 9);
  EXPECT_EQ(seq.block_table.size(), 3u);
  EXPECT_EQ(blocks.num_used_blocks(), 3);
  blocks.free(seq);
  EXPECT_EQ(blocks.num_used_blocks(), 0);
  EXPECT_TRUE(seq.block_table.empty());
}

TEST(BlockManager, RefusesAllocationBeyondCapacity) {
  BlockManager blocks(2, 4, true);
  Sequence seq = make_sequence(1, 9);
  EXPECT_FALSE(blocks.can_allocate({}, 9));
  EXPECT_THROW(blocks.allocate(seq, {}, 9), Error);
  EXPECT_EQ(blocks.num_used_blocks(), 0);
}

TEST(BlockManager, SecondSequenceWithSamePrefixReusesFullBlocks) {
  BlockManager blocks(16, 4, true);
  Sequence a = make_sequence(1, 10);
  admit_and_compute(blocks, a);
  Sequence b = make_sequence(2, 12);  // same first 10 tokens, then two more
  const auto prefix = blocks.find_cached_prefix(b.tokens);
  ASSERT_EQ(prefix.size(), 2u);  // the two full blocks of a; a's third block is partial
  EXPECT_EQ(prefix[0], a.block_table[0]);
  EXPECT_EQ(prefix[1], a.block_table[1]);
  blocks.allocate(b, prefix, b.num_tokens());
  EXPECT_EQ(b.num_computed, 8);
  EXPECT_EQ(blocks.ref_count(a.block_table[0]), 2);
}

TEST(BlockManager, WholePromptHitLeavesTheLastTokenToCompute) {
  BlockManager blocks(16, 4, true);
  Sequence a = make_sequence(1, 8);
  admit_and_compute(blocks, a);
  Sequence b = make_sequence(2, 8);
  // Both blocks are cached but the last token must run to produce logits: only the first block is reused.
  EXPECT_EQ(blocks.find_cached_prefix(b.tokens).size(), 1u);
}

TEST(BlockManager, DifferentEarlierBlockBreaksTheChain) {
  BlockManager blocks(16, 4, true);
  Sequence a = make_sequence(1, 12);
  admit_and_compute(blocks, a);
  Sequence b = make_sequence(2, 12);
  b.tokens[1] = 99;  // first block differs; the second block's tokens alone are identical
  EXPECT_TRUE(blocks.find_cached_prefix(b.tokens).empty());
}

TEST(BlockManager, FreedCachedBlocksStayReusableUntilEvicted) {
  BlockManager blocks(4, 4, true);
  Sequence a = make_sequence(1, 9);
  admit_and_compute(blocks, a);
  blocks.free(a);
  EXPECT_EQ(blocks.num_free_blocks(), 4);
  EXPECT_EQ(blocks.num_cached_blocks(), 2);
  Sequence b = make_sequence(2, 9);
  EXPECT_EQ(blocks.find_cached_prefix(b.tokens).size(), 2u);

  // A different sequence needing every block evicts the cached ones.
  Sequence c = make_sequence(3, 16, 100);
  admit_and_compute(blocks, c);
  EXPECT_EQ(blocks.num_free_blocks(), 0);
  EXPECT_TRUE(blocks.find_cached_prefix(b.tokens).empty());
}

TEST(BlockManager, EvictsLeastRecentlyFreedCachedBlockFirst) {
  BlockManager blocks(4, 4, true);
  Sequence a = make_sequence(1, 5, 0);
  admit_and_compute(blocks, a);
  Sequence b = make_sequence(2, 5, 50);
  admit_and_compute(blocks, b);
  blocks.free(a);  // a's full block freed first → evicted first
  blocks.free(b);
  Sequence c = make_sequence(3, 12, 200);  // 3 blocks: the 2 plain free ones, then evicts 1 cached
  ASSERT_TRUE(blocks.can_allocate({}, 12));
  blocks.allocate(c, {}, 12);
  EXPECT_TRUE(blocks.find_cached_prefix(make_sequence(4, 5, 0).tokens).empty());
  EXPECT_EQ(blocks.find_cached_prefix(make_sequence(5, 5, 50).tokens).size(), 1u);
}

TEST(BlockManager, ReviveOfCachedFreeBlockCountsAgainstFreeSpace) {
  BlockManager blocks(3, 4, true);
  Sequence a = make_sequence(1, 9);
  admit_and_compute(blocks, a);
  blocks.free(a);
  Sequence b = make_sequence(2, 16);  // shares a's two full blocks, needs 4 blocks in all
  const auto prefix = blocks.find_cached_prefix(b.tokens);
  ASSERT_EQ(prefix.size(), 2u);
  EXPECT_FALSE(blocks.can_allocate(prefix, 16));
  EXPECT_TRUE(blocks.can_allocate(prefix, 12));
}

TEST(BlockManager, ForkSharesBlocksAndCopiesOnFirstWriteToSharedPartialBlock) {
  BlockManager blocks(8, 4, true);
  Sequence parent = make_sequence(1, 6);
  admit_and_compute(blocks, parent);
  Sequence child = make_sequence(2, 0);
  child.tokens = parent.tokens;
  blocks.fork(parent, child);
  EXPECT_EQ(blocks.ref_count(parent.block_table[1]), 2);
  EXPECT_EQ(blocks.num_used_blocks(), 2);

  std::vector<std::pair<int32_t, int32_t>> copies;
  child.tokens.push_back(7);
  ASSERT_TRUE(blocks.can_append(child, 1));
  blocks.append(child, 1, copies);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].first, parent.block_table[1]);
  EXPECT_EQ(copies[0].second, child.block_table[1]);
  EXPECT_NE(child.block_table[1], parent.block_table[1]);
  EXPECT_EQ(child.block_table[0], parent.block_table[0]);  // full block stays shared
  EXPECT_EQ(blocks.ref_count(parent.block_table[1]), 1);

  // The parent now owns its partial block alone: no copy.
  copies.clear();
  parent.tokens.push_back(8);
  blocks.append(parent, 1, copies);
  EXPECT_TRUE(copies.empty());
  blocks.free(parent);
  blocks.free(child);
  EXPECT_EQ(blocks.num_used_blocks(), 0);
}

TEST(BlockManager, PrefixCachingOffNeverHits) {
  BlockManager blocks(8, 4, false);
  Sequence a = make_sequence(1, 9);
  admit_and_compute(blocks, a);
  EXPECT_TRUE(blocks.find_cached_prefix(make_sequence(2, 9).tokens).empty());
  EXPECT_EQ(blocks.num_cached_blocks(), 0);
}

}  // namespace
}  // namespace qed
