// make_random_cpu_backend: every tensor a config implies is generated (ModelWeights::bind would name a missing one),
// the forward is finite and not degenerate, the seed alone decides the weights, and shapes it cannot hold are
// refused with one line instead of exhausting host memory.
#include "backend/cpu/random_weights.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend_test_util.h"
#include "core/error.h"
#include "model/model_config.h"

namespace qed {
namespace {

ModelConfig fixture_config(const std::string& name) {
  return ModelConfig::from_file(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name + "/config.json");
}

CpuBackendOptions small_options() {
  CpuBackendOptions options;
  options.num_threads = 2;
  options.num_blocks = 8;
  return options;
}

std::vector<float> logits_of(const ModelConfig& config, uint64_t seed) {
  auto backend = make_random_cpu_backend(config, seed, small_options());
  return testing::prefill_logits(*backend, {1, 5, 9, 2, 7});
}

void expect_finite_and_varied(const std::vector<float>& logits) {
  ASSERT_FALSE(logits.empty());
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  EXPECT_GT(testing::max_abs(logits), 0.0f);
  EXPECT_NE(*std::min_element(logits.begin(), logits.end()), *std::max_element(logits.begin(), logits.end()));
}

TEST(RandomCpuWeights, EveryFixtureShapeBindsAndRunsFinite) {
  for (const char* name : {"qwen2_gqa_bias", "qwen2_tied_mha", "llama3_rope_scaled"}) {
    SCOPED_TRACE(name);
    const ModelConfig config = fixture_config(name);
    const std::vector<float> logits = logits_of(config, 1);
    EXPECT_EQ(logits.size(), size_t(5) * size_t(config.vocab_size));
    expect_finite_and_varied(logits);
  }
}

TEST(RandomCpuWeights, LlamaWithEveryBiasBinds) {
  ModelConfig config = fixture_config("llama3_rope_scaled");
  config.attention_bias = true;  // Llama's covers o_proj too
  config.mlp_bias = true;
  expect_finite_and_varied(logits_of(config, 1));
}

TEST(RandomCpuWeights, TheSeedAloneDecidesTheWeights) {
  const ModelConfig config = fixture_config("qwen2_gqa_bias");
  EXPECT_EQ(logits_of(config, 7), logits_of(config, 7));
  EXPECT_GT(testing::max_abs_diff(logits_of(config, 7), logits_of(config, 8)), 0.0f);
}

TEST(RandomCpuWeights, QuantizedConfigIsRefused) {
  ModelConfig config = fixture_config("qwen2_gqa_bias");
  config.quantization.method = QuantMethod::Fp8;
  try {
    make_random_cpu_backend(config, 0, small_options());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quantization_config"), std::string::npos) << e.what();
  }
}

TEST(RandomCpuWeights, AShapeBeyondHostMemoryIsRefusedBeforeAllocating) {
  ModelConfig config = fixture_config("qwen2_gqa_bias");
  config.hidden_size = 8192;
  config.head_dim = 8192 / config.num_heads;
  config.intermediate_size = 1 << 20;
  config.num_layers = 64;  // ~6 T floats: more than any machine this runs on
  try {
    make_random_cpu_backend(config, 0, small_options());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("host memory"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qed
