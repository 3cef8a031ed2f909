// The CPU backend's tree verification: a chunk of draft-tree nodes with depth positions and an ancestor mask must
// give every node exactly (bit for bit) the logits the node's path gives when run as an ordinary causal sequence;
// greedy equality with and without speculation rests on this.
#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "spec/draft_tree.h"

namespace qed {
namespace {

const std::string kFixtures = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/";

std::vector<int32_t> blocks(int first, int count) {
  std::vector<int32_t> table;
  for (int i = 0; i < count; ++i) table.push_back(first + i);
  return table;
}

class TreeForwardCpu : public ::testing::TestWithParam<std::string> {};

TEST_P(TreeForwardCpu, EveryNodeSeesExactlyItsPath) {
  CpuBackendOptions options;
  options.num_threads = 2;
  options.block_size = 4;
  options.num_blocks = 64;
  auto backend = CpuBackend::load(kFixtures + GetParam(), options);
  const int vocab = backend->config().vocab_size;
  const std::vector<int32_t> prompt = {11, 57, 3, 99, 42, 8, 250, 17, 5};
  const spec::DraftTree tree = spec::DraftTree::from_beams({{30, 31, 32}, {30, 40}, {50, 51, 52}, {30, 31, 60}});

  // Prompt minus its last token computed first, then the last token (the root) with the whole tree.
  ForwardBatch batch;
  ForwardResult result;
  SequenceChunk prefill;
  prefill.tokens.assign(prompt.begin(), prompt.end() - 1);
  prefill.block_table = blocks(0, 8);
  batch.sequences = {prefill};
  backend->forward(batch, result);
  SequenceChunk verify;
  verify.tokens = {prompt.back()};
  verify.num_cached = static_cast<int32_t>(prompt.size()) - 1;
  verify.block_table = blocks(0, 8);
  spec::append_draft_to_chunk(tree, tree.size(), verify.num_cached, verify);
  batch.sequences = {verify};
  backend->forward(batch, result);
  ASSERT_EQ(result.rows, static_cast<int>(tree.size()) + 1);
  const std::vector<float> tree_logits = result.logits;

  // Row r + 1 belongs to node r: its path below the root, run causally in fresh blocks, must give the same logits.
  for (size_t node = 0; node < tree.size(); ++node) {
    std::vector<int32_t> path;
    for (int32_t a = static_cast<int32_t>(node); a >= 0; a = tree.parents[static_cast<size_t>(a)]) {
      path.insert(path.begin(), tree.tokens[static_cast<size_t>(a)]);
    }
    SequenceChunk linear;
    linear.tokens = prompt;
    linear.tokens.insert(linear.tokens.end(), path.begin(), path.end());
    linear.block_table = blocks(16, 8);
    batch.sequences = {linear};
    backend->forward(batch, result);
    const auto row = tree_logits.begin() + static_cast<long>((node + 1) * static_cast<size_t>(vocab));
    EXPECT_TRUE(std::equal(result.logits.begin(), result.logits.end(), row, row + vocab)) << "node " << node;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TreeForwardCpu,
                         ::testing::Values("qwen2_gqa_bias", "qwen2_tied_mha", "llama3_rope_scaled"));

}  // namespace
}  // namespace qed
