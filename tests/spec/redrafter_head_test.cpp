#include "spec/redrafter_head.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "model/safetensors.h"

namespace qed::spec {
namespace {

std::string temp_dir(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("qed_redrafter_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

RedrafterConfig small_config(bool rnn, int exit_dim) {
  return {.vocab_size = 5, .hidden_size = 3, .exit_dim = exit_dim, .num_draft_layers = 2, .rnn = rnn};
}

TEST(RedrafterHead, CheckpointUsesTheReferenceTensorNamesAndRoundTrips) {
  const RedrafterHead head = RedrafterHead::random(small_config(true, 4), 1, 0.5f);
  const std::string dir = temp_dir("roundtrip");
  head.save(dir);
  const Checkpoint checkpoint = Checkpoint::open(dir);
  const std::vector<std::string> names = checkpoint.names();
  const std::set<std::string> expected = {"input_proj.weight",
                                          "input_proj.bias",
                                          "lm_head.0.linear.weight",
                                          "lm_head.0.linear.bias",
                                          "lm_head.1.linear.weight",
                                          "lm_head.1.linear.bias",
                                          "lm_head.2.weight",
                                          "rnn_u.weight",
                                          "rnn_u.bias",
                                          "rnn_w.weight"};
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), expected);
  EXPECT_EQ(checkpoint.get("input_proj.weight").shape, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(checkpoint.get("lm_head.2.weight").shape, (std::vector<int64_t>{5, 4}));
  const RedrafterHead loaded = RedrafterHead::load(dir);
  EXPECT_EQ(loaded.config().exit_dim, 4);
  EXPECT_TRUE(loaded.config().rnn);
  EXPECT_EQ(loaded.input_proj.weight, head.input_proj.weight);
  EXPECT_EQ(loaded.rnn_u.bias, head.rnn_u.bias);
  EXPECT_EQ(loaded.vocab_proj.weight, head.vocab_proj.weight);
  std::filesystem::remove_all(dir);
}

TEST(RedrafterHead, NsLayoutHasNoInputProjectionAndCumulativeState) {
  // NS trains exit_dim = 2 × hidden and rnn = false: no input_proj, no rnn weights, s_t = E(g) + s_{t-1}.
  const RedrafterHead head = RedrafterHead::random(small_config(false, 6), 2, 0.5f);
  const std::string dir = temp_dir("ns");
  head.save(dir);
  const std::vector<std::string> names = Checkpoint::open(dir).names();
  EXPECT_EQ(std::count_if(names.begin(), names.end(), [](const std::string& n) { return n.starts_with("rnn_"); }), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "input_proj.weight"), 0);
  std::vector<float> state = {1, 2, 3};
  head.update_state(std::vector<float>{0.5f, -1, 4}, state);
  EXPECT_EQ(state, (std::vector<float>{1.5f, 1, 7}));
  std::filesystem::remove_all(dir);
}

TEST(RedrafterHead, MissingTensorIsAnErrorNamingIt) {
  const std::string dir = temp_dir("missing");
  RedrafterHead::random(small_config(true, 6), 3, 0.5f).save(dir);
  RedrafterHead other = RedrafterHead::random(small_config(true, 4), 3, 0.5f);  // expects input_proj
  other.save(dir + "_b");
  std::filesystem::copy_file(dir + "_b/config.json", dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  try {
    RedrafterHead::load(dir);
    FAIL() << "loaded a checkpoint without input_proj";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input_proj.weight"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(dir + "_b");
}

TEST(RedrafterHead, ForwardMatchesTheFormulaByHand) {
  // hidden 1, exit_dim 2 (= 2H: no input_proj), one ResBlock, vocab 2, rnn.
  RedrafterHead head({.vocab_size = 2, .hidden_size = 1, .exit_dim = 2, .num_draft_layers = 1, .rnn = true});
  head.rnn_w.weight = {2.0f};
  head.rnn_u.weight = {0.5f};
  head.rnn_u.bias = {-1.0f};
  head.res_blocks[0].weight = {1, 0, 0, 1};
  head.res_blocks[0].bias = {0, 1};
  head.vocab_proj.weight = {1, 0, 0, 1};
  std::vector<float> state = {2.0f};
  head.update_state(std::vector<float>{0.25f}, state);  // silu(2·0.25 + 0.5·2 − 1) = silu(0.5)
  const auto silu = [](double x) { return x / (1 + std::exp(-x)); };
  EXPECT_NEAR(state[0], silu(0.5), 1e-6);
  std::vector<float> out(2);
  head.log_probs(std::vector<float>{1.0f}, state, out);
  // x = [1, s]; x + silu([1, s + 1]) are the two logits; log-softmax of them.
  const double a = 1 + silu(1), b = state[0] + silu(state[0] + 1.0);
  const double lse = std::max(a, b) + std::log(std::exp(a - std::max(a, b)) + std::exp(b - std::max(a, b)));
  EXPECT_NEAR(out[0], a - lse, 1e-5);
  EXPECT_NEAR(out[1], b - lse, 1e-5);
}

TEST(RedrafterHead, WideBeamSearchFindsTheExhaustiveTopPaths) {
  // With width >= vocab nothing is pruned, so the beams are the best `width` of all vocab^2 two-token paths.
  const RedrafterHead head = RedrafterHead::random(small_config(true, 4), 9, 1.0f);
  const std::vector<float> context = {0.3f, -0.7f, 1.1f};
  std::vector<float> embeddings(5 * 3);
  for (size_t i = 0; i < embeddings.size(); ++i) embeddings[i] = std::sin(float(i));
  const DraftBeams beams = head.beam_search(context, 2, embeddings, 5, 3);
  ASSERT_EQ(beams.tokens.size(), 5u);
  std::vector<std::pair<float, std::vector<int32_t>>> all;
  for (int32_t a = 0; a < 5; ++a) {
    std::vector<float> s1(3, 0.0f), lp1(5), lp2(5);
    head.update_state(std::span<const float>(embeddings).subspan(2 * 3, 3), s1);
    head.log_probs(context, s1, lp1);
    std::vector<float> s2 = s1;
    head.update_state(std::span<const float>(embeddings).subspan(static_cast<size_t>(a) * 3, 3), s2);
    head.log_probs(context, s2, lp2);
    for (int32_t b = 0; b < 5; ++b) all.push_back({lp1[static_cast<size_t>(a)] + lp2[static_cast<size_t>(b)], {a, b}});
  }
  std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(beams.tokens[i], all[i].second) << "beam " << i;
    EXPECT_NEAR(beams.log_p[i], all[i].first, 1e-5) << "beam " << i;
  }
}

TEST(RedrafterHead, BeamSearchRejectsBadShapes) {
  const RedrafterHead head = RedrafterHead::random(small_config(true, 4), 9, 1.0f);
  const std::vector<float> context(3), embeddings(15);
  EXPECT_THROW(head.beam_search(context, 0, embeddings, 0, 3), Error);
  EXPECT_THROW(head.beam_search(context, 0, embeddings, 2, 1), Error);
  EXPECT_THROW(head.beam_search(context, 7, embeddings, 2, 3), Error);
  EXPECT_THROW(head.beam_search(std::vector<float>(2), 0, embeddings, 2, 3), Error);
}

}  // namespace
}  // namespace qed::spec
