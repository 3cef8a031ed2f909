// How a sequence is batched, chunked or laid out in the paged cache must not change its logits. In the reference
// backend every output element is computed by the same loop in the same order whatever else is in the batch (rows
// are independent in matmul; attention visits a sequence's slots in slot order and masked slots add exact zeros),
// so these comparisons are exact, not approximate.
#include <gtest/gtest.h>

#include "backend_test_util.h"
#include "core/error.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed::testing {
namespace {

class Batching : public ::testing::TestWithParam<std::string> {};

std::vector<float> rows_of(const std::vector<float>& logits, size_t first, size_t count, int vocab) {
  return {logits.begin() + long(first * size_t(vocab)), logits.begin() + long((first + count) * size_t(vocab))};
}

TEST_P(Batching, SequencesInOneBatchEqualEachRunAlone) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  ForwardBatch batch;
  int next_block = 0;
  for (const HfPrompt& prompt : fixture.prompts) {
    SequenceChunk chunk;
    chunk.tokens = prompt.ids;
    const int blocks = int((prompt.ids.size() + 15) / 16);
    chunk.block_table = iota_blocks(next_block, blocks);
    next_block += blocks;
    chunk.logits_indices = all_indices(prompt.ids.size());
    batch.sequences.push_back(chunk);
  }
  ForwardResult batched;
  backend->forward(batch, batched);
  size_t row = 0;
  for (const HfPrompt& prompt : fixture.prompts) {
    const std::vector<float> alone = prefill_logits(*backend, prompt.ids);
    EXPECT_EQ(rows_of(batched.logits, row, prompt.ids.size(), fixture.vocab), alone);
    row += prompt.ids.size();
  }
  EXPECT_EQ(size_t(batched.rows), row);
}

TEST_P(Batching, ChunkedPrefillAtOddSplitsEqualsOneChunk) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const std::vector<int32_t>& ids = fixture.prompts.back().ids;  // 130 tokens
  const std::vector<float> whole = prefill_logits(*backend, ids);
  std::vector<float> chunked;
  const std::vector<size_t> splits = {0, 7, 57, 58, ids.size()};
  for (size_t c = 0; c + 1 < splits.size(); ++c) {
    SequenceChunk chunk;
    chunk.num_cached = int32_t(splits[c]);
    chunk.tokens.assign(ids.begin() + long(splits[c]), ids.begin() + long(splits[c + 1]));
    chunk.block_table = iota_blocks(20, int((splits[c + 1] + 15) / 16));
    chunk.logits_indices = all_indices(chunk.tokens.size());
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    ForwardResult result;
    backend->forward(batch, result);
    chunked.insert(chunked.end(), result.logits.begin(), result.logits.end());
  }
  EXPECT_EQ(chunked, whole);
}

TEST_P(Batching, DecodingOneTokenAtATimeEqualsPrefill) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const std::vector<int32_t>& ids = fixture.prompts[3].ids;  // 64 tokens: crosses block boundaries
  const std::vector<float> whole = prefill_logits(*backend, ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    SequenceChunk chunk;
    chunk.num_cached = int32_t(i);
    chunk.tokens = {ids[i]};
    chunk.block_table = iota_blocks(8, int(i / 16 + 1));
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    ForwardResult result;
    backend->forward(batch, result);
    ASSERT_EQ(result.logits, rows_of(whole, i, 1, fixture.vocab)) << "token " << i;
  }
}

TEST_P(Batching, ScatteredBlockTableEqualsContiguous) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const std::vector<int32_t>& ids = fixture.prompts.back().ids;
  SequenceChunk chunk;
  chunk.tokens = ids;
  chunk.block_table = {40, 3, 17, 9, 63, 0, 31, 22, 50};  // 9 blocks of 16 hold 130 tokens
  chunk.logits_indices = all_indices(ids.size());
  ForwardBatch batch;
  batch.sequences.push_back(chunk);
  ForwardResult result;
  backend->forward(batch, result);
  EXPECT_EQ(result.logits, prefill_logits(*backend, ids));
}

TEST_P(Batching, ExplicitDefaultPositionsEqualImplicitOnes) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const std::vector<int32_t>& ids = fixture.prompts[2].ids;
  SequenceChunk chunk;
  chunk.tokens = ids;
  chunk.positions = all_indices(ids.size());
  chunk.block_table = iota_blocks(0, 2);
  chunk.logits_indices = all_indices(ids.size());
  ForwardBatch batch;
  batch.sequences.push_back(chunk);
  ForwardResult result;
  backend->forward(batch, result);
  EXPECT_EQ(result.logits, prefill_logits(*backend, ids));
}

// A draft tree after a 17-token prefix: r; a, b children of r; c child of a; d child of b. With the tree mask and
// tree positions, each node's logits equal running its root-to-node path as a plain sequence.
TEST_P(Batching, TreeMaskForwardEqualsEachBranchAlone) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const std::vector<int32_t>& prefix = fixture.prompts[2].ids;
  const int32_t base = int32_t(prefix.size());
  const std::vector<int32_t> nodes = {5, 11, 42, 7, 99};  // r, a, b, c, d
  const std::vector<int> parent = {-1, 0, 0, 1, 2};
  const size_t n = nodes.size();

  prefill_logits(*backend, prefix, 0);  // prefix K/V in blocks 0, 1
  SequenceChunk tree;
  tree.num_cached = base;
  tree.tokens = nodes;
  tree.block_table = iota_blocks(0, 2);
  tree.attention_mask.assign(n * n, 0);
  for (size_t i = 0; i < n; ++i) {
    int depth = 0;
    for (int j = int(i); j >= 0; j = parent[size_t(j)], ++depth) tree.attention_mask[i * n + size_t(j)] = 1;
    tree.positions.push_back(base + depth - 1);
  }
  tree.logits_indices = all_indices(n);
  ForwardBatch batch;
  batch.sequences.push_back(tree);
  ForwardResult tree_result;
  backend->forward(batch, tree_result);

  for (size_t i = 0; i < n; ++i) {
    std::vector<int32_t> path;
    for (int j = int(i); j >= 0; j = parent[size_t(j)]) path.insert(path.begin(), nodes[size_t(j)]);
    std::vector<int32_t> sequence = prefix;
    sequence.insert(sequence.end(), path.begin(), path.end());
    const std::vector<float> alone = prefill_logits(*backend, sequence, 10);
    EXPECT_EQ(rows_of(tree_result.logits, i, 1, fixture.vocab), rows_of(alone, sequence.size() - 1, 1, fixture.vocab))
        << "node " << i;
  }
}

TEST_P(Batching, CopiedKvBlocksDecodeLikeTheOriginal) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const std::vector<int32_t>& ids = fixture.prompts[2].ids;  // 17 tokens: blocks 0 and 1 (one slot used)
  prefill_logits(*backend, ids, 0);
  const std::pair<int32_t, int32_t> copy[] = {{1, 6}};
  backend->copy_kv_blocks(copy);
  auto decode = [&](std::vector<int32_t> table) {
    SequenceChunk chunk;
    chunk.num_cached = int32_t(ids.size());
    chunk.tokens = {3};
    chunk.block_table = std::move(table);
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    ForwardResult result;
    backend->forward(batch, result);
    return result.logits;
  };
  const std::vector<float> forked = decode({0, 6});
  EXPECT_EQ(forked, decode({0, 1}));
}

TEST_P(Batching, WantHiddenReturnsTheFinalNormStateTheLmHeadMaps) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const ModelConfig& config = backend->config();
  SequenceChunk chunk;
  chunk.tokens = fixture.prompts[2].ids;
  chunk.block_table = iota_blocks(0, 2);
  chunk.logits_indices = {16, 0, 9};
  ForwardBatch batch;
  batch.sequences.push_back(chunk);
  batch.want_hidden = true;
  ForwardResult result;
  backend->forward(batch, result);
  ASSERT_EQ(result.rows, 3);
  ASSERT_EQ(result.hidden.size(), size_t(3 * config.hidden_size));

  const Checkpoint checkpoint = Checkpoint::open(fixture.dir);
  const ModelWeights weights = ModelWeights::bind(checkpoint, config);
  const std::vector<float> lm_head = tensor_to_f32(*weights.lm_head);
  std::vector<float> logits(size_t(3 * config.vocab_size));
  cpu::matmul(result.hidden.data(), lm_head.data(), nullptr, logits.data(), 3, config.hidden_size, config.vocab_size,
              nullptr);
  EXPECT_EQ(logits, result.logits);
  const std::vector<float> all = prefill_logits(*backend, chunk.tokens);
  EXPECT_EQ(rows_of(result.logits, 0, 1, fixture.vocab), rows_of(all, 16, 1, fixture.vocab));
  EXPECT_EQ(rows_of(result.logits, 1, 1, fixture.vocab), rows_of(all, 0, 1, fixture.vocab));

  // skip_logits (the draft-head trainer's base forward): no lm_head, no logits, the same hidden states.
  batch.skip_logits = true;
  ForwardResult hidden_only;
  backend->forward(batch, hidden_only);
  EXPECT_EQ(hidden_only.rows, 3);
  EXPECT_TRUE(hidden_only.logits.empty());
  EXPECT_EQ(hidden_only.hidden, result.hidden);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Batching, ::testing::ValuesIn(hf_fixture_names()),
                         [](const auto& test_param) { return test_param.param; });

class MalformedBatch : public ::testing::Test {
 protected:
  std::unique_ptr<CpuBackend> backend = load_fixture_backend("qwen2_gqa_bias", 8);
  ForwardResult result;
  SequenceChunk valid() const {
    SequenceChunk chunk;
    chunk.tokens = {1, 2, 3};
    chunk.block_table = {0};
    return chunk;
  }
  void expect_rejected(const SequenceChunk& chunk) {
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    EXPECT_THROW(backend->forward(batch, result), Error);
  }
};

TEST_F(MalformedBatch, TokenOutsideTheVocabularyIsRejected) {
  auto chunk = valid();
  chunk.tokens[1] = 512;
  expect_rejected(chunk);
}

TEST_F(MalformedBatch, BlockTableTooShortForTheSlotsIsRejected) {
  auto chunk = valid();
  chunk.num_cached = 14;
  expect_rejected(chunk);
}

TEST_F(MalformedBatch, BlockOutsideTheCacheIsRejected) {
  auto chunk = valid();
  chunk.block_table = {8};
  expect_rejected(chunk);
}

TEST_F(MalformedBatch, LogitsIndexOutsideTheChunkIsRejected) {
  auto chunk = valid();
  chunk.logits_indices = {3};
  expect_rejected(chunk);
}

TEST_F(MalformedBatch, MaskOfTheWrongSizeIsRejected) {
  auto chunk = valid();
  chunk.attention_mask.assign(4, 1);
  expect_rejected(chunk);
}

}  // namespace
}  // namespace qed::testing
