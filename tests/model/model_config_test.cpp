// config.json → ModelConfig, for configs written by transformers 4.x (torch_dtype, top-level rope_theta,
// rope_scaling) and 5.x (dtype, rope_parameters), with transformers' defaults where keys are absent.
#include "model/model_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "temp_dir.h"

namespace qed {
namespace {

using nlohmann::json;

// OpenMath-Nemotron-14B / Qwen2.5-14B config.json as transformers 4.x writes it.
json qwen25_14b() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02,
    "intermediate_size": 13824, "max_position_embeddings": 131072, "max_window_layers": 48,
    "model_type": "qwen2", "num_attention_heads": 40, "num_hidden_layers": 48, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 1000000.0, "sliding_window": 131072,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.47.1",
    "use_cache": true, "use_sliding_window": false, "vocab_size": 152064})");
}

// Llama-3.1-8B-Instruct config.json (transformers 4.x: rope_scaling with rope_type llama3).
json llama31_8b() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
    "vocab_size": 128256})");
}

std::string config_error(const json& config) {
  try {
    ModelConfig::from_json(config, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

testing::AssertionResult rejected_with(const json& config, const std::string& expected) {
  std::string message = config_error(config);
  if (message.empty()) return testing::AssertionFailure() << "accepted, expected: " << expected;
  if (message.find(expected) == std::string::npos || message.rfind("config.json: ", 0) != 0) {
    return testing::AssertionFailure() << "error '" << message << "' does not contain '" << expected << "'";
  }
  return testing::AssertionSuccess();
}

std::string fixture(const std::string& name) {
  return std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name + "/config.json";
}

TEST(ModelConfig, ReadsQwen25InTransformers4Form) {
  ModelConfig c = ModelConfig::from_json(qwen25_14b(), "config.json");
  EXPECT_EQ(c.architecture, Architecture::Qwen2);
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.hidden_size, 5120);
  EXPECT_EQ(c.num_layers, 48);
  EXPECT_EQ(c.num_heads, 40);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.intermediate_size, 13824);
  EXPECT_EQ(c.vocab_size, 152064);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{151643});
}

TEST(ModelConfig, ReadsLlama31InTransformers4Form) {
  ModelConfig c = ModelConfig::from_json(llama31_8b(), "config.json");
  EXPECT_EQ(c.architecture, Architecture::Llama);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
}

TEST(ModelConfig, ReadsLegacyRopeScalingTypeKey) {
  json config = llama31_8b();
  config["rope_scaling"].erase("rope_type");
  config["rope_scaling"]["type"] = "llama3";
  EXPECT_EQ(ModelConfig::from_json(config, "config.json").rope_scaling.type, "llama3");
}

TEST(ModelConfig, ReadsTransformers5RopeParametersAndDtype) {
  json config = llama31_8b();
  config.erase("rope_theta");
  config.erase("torch_dtype");
  config["dtype"] = "float16";
  config["rope_parameters"] = std::move(config["rope_scaling"]);
  config.erase("rope_scaling");
  config["rope_parameters"]["rope_theta"] = 250000.0;
  ModelConfig c = ModelConfig::from_json(config, "config.json");
  EXPECT_FLOAT_EQ(c.rope_theta, 250000.0f);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_EQ(c.dtype, DType::F16);
}

TEST(ModelConfig, DtypeWinsOverTorchDtype) {
  json config = qwen25_14b();
  config["dtype"] = "float32";
  EXPECT_EQ(ModelConfig::from_json(config, "config.json").dtype, DType::F32);
}

TEST(ModelConfig, ReadsTransformers5FixtureQwen2WithGqaAndBias) {
  ModelConfig c = ModelConfig::from_file(fixture("qwen2_gqa_bias"));
  EXPECT_EQ(c.architecture, Architecture::Qwen2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_TRUE(c.eos_token_ids.empty());
}

TEST(ModelConfig, ReadsTransformers5FixtureQwen2Tied) {
  ModelConfig c = ModelConfig::from_file(fixture("qwen2_tied_mha"));
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.num_kv_heads, c.num_heads);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
}

TEST(ModelConfig, ReadsTransformers5FixtureLlamaWithExplicitHeadDim) {
  ModelConfig c = ModelConfig::from_file(fixture("llama3_rope_scaled"));
  EXPECT_EQ(c.architecture, Architecture::Llama);
  EXPECT_EQ(c.hidden_size, 96);
  EXPECT_EQ(c.head_dim, 32);  // explicit, not 96 / 4
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
}

TEST(ModelConfig, DefaultsMatchTransformersConfigClasses) {
  json qwen = {{"model_type", "qwen2"},     {"hidden_size", 64},        {"num_hidden_layers", 2},
               {"num_attention_heads", 32}, {"intermediate_size", 128}, {"vocab_size", 100}};
  ModelConfig q = ModelConfig::from_json(qwen, "config.json");
  EXPECT_EQ(q.num_kv_heads, 32);  // Qwen2Config: num_key_value_heads=32
  EXPECT_EQ(q.max_position_embeddings, 32768);
  EXPECT_FLOAT_EQ(q.rms_norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(q.rope_theta, 10000.0f);
  EXPECT_FALSE(q.tie_word_embeddings);
  EXPECT_EQ(q.bos_token_id, -1);
  EXPECT_TRUE(q.eos_token_ids.empty());
  EXPECT_EQ(q.dtype, DType::BF16);

  json llama = qwen;
  llama["model_type"] = "llama";
  llama["num_attention_heads"] = 4;
  ModelConfig l = ModelConfig::from_json(llama, "config.json");
  EXPECT_EQ(l.num_kv_heads, 4);  // LlamaConfig: None -> num_attention_heads
  EXPECT_EQ(l.head_dim, 16);
  EXPECT_EQ(l.max_position_embeddings, 2048);
  EXPECT_FALSE(l.attention_bias);
  EXPECT_FALSE(l.mlp_bias);
  EXPECT_EQ(l.bos_token_id, 1);
  EXPECT_EQ(l.eos_token_ids, std::vector<int>{2});
}

TEST(ModelConfig, NullKvHeadsMeansOnePerQueryHead) {
  json config = qwen25_14b();
  config["num_key_value_heads"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(config, "config.json").num_kv_heads, 40);
}

TEST(ModelConfig, Qwen2AlwaysHasQkvBiasLlamaFollowsConfig) {
  json qwen = qwen25_14b();
  qwen["attention_bias"] = false;  // ignored by Qwen2Attention, so ignored here
  EXPECT_TRUE(ModelConfig::from_json(qwen, "config.json").attention_bias);
  json llama = llama31_8b();
  llama["attention_bias"] = true;
  llama["mlp_bias"] = true;
  ModelConfig c = ModelConfig::from_json(llama, "config.json");
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.mlp_bias);
}

TEST(ModelConfig, ModelTypeMayComeFromArchitectures) {
  json config = llama31_8b();
  config.erase("model_type");
  EXPECT_EQ(ModelConfig::from_json(config, "config.json").architecture, Architecture::Llama);
}

TEST(ModelConfig, RejectsUnsupportedModelType) {
  json config = qwen25_14b();
  config["model_type"] = "mistral";
  EXPECT_EQ(config_error(config), "config.json: unsupported model_type 'mistral' (supported: qwen2, llama)");
}

TEST(ModelConfig, RejectsNonCausalLmArchitecture) {
  json config = qwen25_14b();
  config["architectures"] = {"Qwen2ForProcessRewardModel"};
  EXPECT_TRUE(rejected_with(config, "unsupported architecture 'Qwen2ForProcessRewardModel'"));
}

TEST(ModelConfig, RejectsMissingModelType) {
  json config = qwen25_14b();
  config.erase("model_type");
  config.erase("architectures");
  EXPECT_TRUE(rejected_with(config, "missing 'model_type'"));
}

TEST(ModelConfig, RejectsUnsupportedRopeTypeNamingIt) {
  json config = llama31_8b();
  config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  EXPECT_TRUE(rejected_with(config, "unsupported rope type 'yarn'"));
  config.erase("rope_scaling");
  config["rope_parameters"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  EXPECT_TRUE(rejected_with(config, "unsupported rope type 'dynamic'"));
}

TEST(ModelConfig, RejectsIncompleteLlama3Scaling) {
  json config = llama31_8b();
  config["rope_scaling"].erase("low_freq_factor");
  EXPECT_TRUE(rejected_with(config, "llama3 rope scaling needs 'rope_scaling.low_freq_factor'"));
}

TEST(ModelConfig, RejectsMissingSize) {
  json config = qwen25_14b();
  config.erase("hidden_size");
  EXPECT_EQ(config_error(config), "config.json: missing 'hidden_size'");
}

TEST(ModelConfig, RejectsWrongFieldTypes) {
  json config = qwen25_14b();
  config["num_hidden_layers"] = "48";
  EXPECT_TRUE(rejected_with(config, "'num_hidden_layers' must be an integer, got \"48\""));
  config = qwen25_14b();
  config["rms_norm_eps"] = "small";
  EXPECT_TRUE(rejected_with(config, "'rms_norm_eps' must be a number"));
  config = qwen25_14b();
  config["tie_word_embeddings"] = 1;
  EXPECT_TRUE(rejected_with(config, "'tie_word_embeddings' must be true or false"));
  config = qwen25_14b();
  config["hidden_size"] = 1ull << 40;
  EXPECT_TRUE(rejected_with(config, "'hidden_size' is out of range"));
}

TEST(ModelConfig, RejectsUnsupportedDtype) {
  json config = qwen25_14b();
  config["torch_dtype"] = "float64";
  EXPECT_TRUE(rejected_with(config, "unsupported torch_dtype 'float64'"));
}

TEST(ModelConfig, RejectsSlidingWindowAttention) {
  json config = qwen25_14b();
  config["use_sliding_window"] = true;
  EXPECT_TRUE(rejected_with(config, "use_sliding_window=true is not supported"));
}

TEST(ModelConfig, ValidateRejectsHeadsNotDivisibleByKvHeads) {
  json config = qwen25_14b();
  config["num_key_value_heads"] = 7;
  EXPECT_EQ(config_error(config), "config.json: num_attention_heads 40 is not a multiple of num_key_value_heads 7");
}

TEST(ModelConfig, ValidateRejectsNonPositiveSizes) {
  json config = qwen25_14b();
  config["intermediate_size"] = 0;
  EXPECT_TRUE(rejected_with(config, "'intermediate_size' must be positive, got 0"));
  config = qwen25_14b();
  config["num_attention_heads"] = 0;
  EXPECT_TRUE(rejected_with(config, "'num_attention_heads' must be positive"));
}

TEST(ModelConfig, ValidateRejectsOddHeadDim) {
  json config = qwen25_14b();
  config["head_dim"] = 127;
  EXPECT_TRUE(rejected_with(config, "head_dim 127 must be even"));
}

TEST(ModelConfig, ValidateRejectsEosOutsideVocabulary) {
  json config = qwen25_14b();
  config["eos_token_id"] = {151643, 200000};
  EXPECT_TRUE(rejected_with(config, "'eos_token_id' 200000 is outside the vocabulary [0, 152064)"));
}

TEST(ModelConfig, FromFileNamesThePath) {
  test::TempDir dir;
  std::string path = dir.write("config.json", "{\"model_type\": ");
  try {
    ModelConfig::from_file(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path + ": not valid JSON", 0), 0u) << e.what();
  }
  EXPECT_THROW(ModelConfig::from_file(dir.file("absent.json")), Error);
  std::string overflowing = dir.write("big.json", "{\"hidden_size\": 1e99999}");
  EXPECT_THROW(ModelConfig::from_file(overflowing), Error);
}

TEST(ModelConfig, RejectsNonObject) {
  EXPECT_TRUE(rejected_with(json::array(), "config must be a JSON object"));
}

}  // namespace
}  // namespace qed
