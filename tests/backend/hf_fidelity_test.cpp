// The CPU backend against HF transformers on the fixtures of tests/fixtures/hf (tools/make_hf_fixtures.py): same
// bf16 weights, both computing in fp32, so only summation order and libm differ.
#include <gtest/gtest.h>

#include <cstdio>

#include "backend_test_util.h"

namespace qed::testing {
namespace {

// Both sides compute in fp32 from identical weights; they differ only in summation order (BLAS blocking vs our
// 8-lane dot) and in 1-ulp libm differences (exp, cos, sin, pow), i.e. a few ulps per op (~1e-6 relative), which
// 2-3 residual layers with random weights amplify mildly. Measured (2026-11-25): max |diff| / max |logit| per
// fixture 1.1e-6 (qwen2_gqa_bias), 2.2e-6 (qwen2_tied_mha), 2.4e-6 (llama3_rope_scaled), i.e. <= 4e-5 absolute for
// logits up to 18.6. The bound keeps ~8x headroom over that for other compilers/libms while staying three orders
// below what real bugs give (a wrong eps, a missing bias, a swapped rotary half or an unscaled llama3 frequency
// move logits by 1e-2 or more).
constexpr float kRelativeTolerance = 2e-5f;
// Positions where HF's top-2 logits are closer than this are not argmax-checked (a tie at fp32 noise level).
constexpr float kArgmaxMargin = 1e-3f;

class HfFidelity : public ::testing::TestWithParam<std::string> {};

size_t argmax(const float* row, int n) {
  return size_t(std::max_element(row, row + n) - row);
}

float top2_margin(const float* row, int n) {
  std::vector<float> sorted(row, row + n);
  std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
  return sorted[0] - sorted[1];
}

TEST_P(HfFidelity, LogitsMatchHfAtEveryPosition) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  float worst_relative = 0.0f;
  for (size_t p = 0; p < fixture.prompts.size(); ++p) {
    const HfPrompt& prompt = fixture.prompts[p];
    const std::vector<float> logits = prefill_logits(*backend, prompt.ids);
    ASSERT_EQ(logits.size(), prompt.logits.size());
    const float diff = max_abs_diff(logits, prompt.logits);
    const float scale = std::max(1.0f, max_abs(prompt.logits));
    worst_relative = std::max(worst_relative, diff / scale);
    std::printf("[ fidelity ] %s prompt %zu (%zu tokens): max |logit diff| %.3g, max |logit| %.3g\n",
                fixture.name.c_str(), p, prompt.ids.size(), double(diff), double(scale));
    EXPECT_LE(diff, kRelativeTolerance * scale) << fixture.name << " prompt " << p;
  }
  std::printf("[ fidelity ] %s: worst max|diff| / max|logit| = %.3g\n", fixture.name.c_str(), double(worst_relative));
}

TEST_P(HfFidelity, ArgmaxMatchesHfAtEveryPosition) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const int vocab = fixture.vocab;
  size_t checked = 0, total = 0;
  for (const HfPrompt& prompt : fixture.prompts) {
    const std::vector<float> logits = prefill_logits(*backend, prompt.ids);
    for (size_t i = 0; i < prompt.ids.size(); ++i, ++total) {
      const float* hf = prompt.logits.data() + i * size_t(vocab);
      if (top2_margin(hf, vocab) < kArgmaxMargin) continue;
      ++checked;
      EXPECT_EQ(argmax(logits.data() + i * size_t(vocab), vocab), argmax(hf, vocab)) << "position " << i;
    }
  }
  // Near-ties must be rare, or this test checks nothing.
  EXPECT_GE(checked * 10, total * 9) << checked << " of " << total << " positions checked";
}

TEST_P(HfFidelity, GreedyContinuationMatchesHfGenerate) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const int block_size = backend->kv_layout().block_size;
  for (const HfPrompt& prompt : fixture.prompts) {
    // Prefill, then one decode step per token, as generation runs.
    SequenceChunk chunk;
    chunk.tokens = prompt.ids;
    std::vector<int32_t> generated;
    ForwardResult result;
    while (generated.size() < prompt.greedy.size()) {
      const size_t slots = size_t(chunk.num_cached) + chunk.tokens.size();
      chunk.block_table = iota_blocks(0, int((slots + size_t(block_size) - 1) / size_t(block_size)));
      ForwardBatch batch;
      batch.sequences.push_back(chunk);
      backend->forward(batch, result);
      ASSERT_EQ(result.rows, 1);
      const int32_t token = int32_t(argmax(result.logits.data(), fixture.vocab));
      generated.push_back(token);
      chunk.num_cached += int32_t(chunk.tokens.size());
      chunk.tokens = {token};
    }
    EXPECT_EQ(generated, prompt.greedy) << fixture.name << ", prompt of " << prompt.ids.size() << " tokens";
  }
}

TEST_P(HfFidelity, RopeInverseFrequenciesMatchHf) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto backend = load_fixture_backend(GetParam());
  const ModelConfig& config = backend->config();
  std::vector<float> inv_freq(size_t(config.head_dim / 2));
  cpu::rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling, inv_freq.data());
  ASSERT_EQ(inv_freq.size(), fixture.rotary_inv_freq.size());
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    // pow() may differ from torch's by an ulp; nothing more.
    EXPECT_NEAR(inv_freq[i], fixture.rotary_inv_freq[i], 2.5e-7f * fixture.rotary_inv_freq[i]) << "i = " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfFidelity, ::testing::ValuesIn(hf_fixture_names()),
                         [](const auto& test_param) { return test_param.param; });

}  // namespace
}  // namespace qed::testing
