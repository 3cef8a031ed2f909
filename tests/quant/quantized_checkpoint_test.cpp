// quantization_config parsing (the three conventions vLLM reads) and the quantized-checkpoint round trip on a
// fixture model: qed quantize's writer → loader → CPU backend, including other writers' k/v-scale spellings.
#include "quant/quantized_checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../model/temp_dir.h"
#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/mmap_file.h"
#include "model/model_config.h"
#include "model/quant_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "quant/calibration.h"
#include "quant_config_test_util.h"

namespace qed {
namespace {

using nlohmann::json;

const std::string kFixture = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_gqa_bias";

using test::error_of;
using test::parse;

TEST(QuantConfig, Fp8StaticWithIgnoredLmHead) {
  const QuantizationConfig q =
      parse(R"({"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]})");
  EXPECT_EQ(q.method, QuantMethod::Fp8);
  EXPECT_EQ(q.activations, ActivationScheme::Static);
  EXPECT_FALSE(q.is_quantized_module("lm_head"));
  EXPECT_TRUE(q.is_quantized_module("model.layers.0.mlp.down_proj"));
}

TEST(QuantConfig, Fp8WithoutSchemeIsDynamicAsInVllm) {
  EXPECT_EQ(parse(R"({"quant_method": "fp8"})").activations, ActivationScheme::Dynamic);
}

TEST(QuantConfig, UnsupportedVariantsAreClearErrors) {
  // (Block-wise FP8, weight_block_size, is read: block_fp8_test.cpp.)
  EXPECT_NE(error_of([] { parse(R"({"quant_method": "awq"})"); }).find("'awq' is not supported"), std::string::npos);
  EXPECT_NE(error_of([] { parse(R"({"quant_method": "modelopt", "quant_algo": "NVFP4"})"); }).find("NVFP4"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse(R"({"quant_method": "compressed-tensors", "config_groups": {"g": {
                "weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
                "input_activations": {"num_bits": 8, "type": "int", "strategy": "token"}}}})");
            }).find("W8A8"),
            std::string::npos);
}

TEST(QuantConfig, CompressedTensorsFloatAndIntGroups) {
  const QuantizationConfig fp8 =
      parse(R"({"quant_method": "compressed-tensors", "ignore": ["lm_head", "re:.*\\.0\\.mlp\\..*"],
    "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
    "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": false}}}})");
  EXPECT_EQ(fp8.method, QuantMethod::Fp8);
  EXPECT_EQ(fp8.activations, ActivationScheme::Static);
  EXPECT_FALSE(fp8.is_quantized_module("model.layers.0.mlp.up_proj"));  // the regex entry
  EXPECT_TRUE(fp8.is_quantized_module("model.layers.10.mlp.up_proj"));
  const QuantizationConfig int8 = parse(R"({"quant_method": "compressed-tensors",
    "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
    "input_activations": null}}})");
  EXPECT_EQ(int8.method, QuantMethod::Int8WeightOnly);
}

TEST(QuantConfig, ModelOptNestedFieldsAndPrefixExclusion) {
  const QuantizationConfig q = parse(
      R"({"quant_method": "modelopt", "quantization": {"quant_algo": "FP8", "exclude_modules": ["lm_head", "model.layers.1"]}})");
  EXPECT_EQ(q.method, QuantMethod::Fp8);
  EXPECT_EQ(q.activations, ActivationScheme::Static);
  EXPECT_FALSE(q.is_quantized_module("model.layers.1.self_attn.q_proj"));
  EXPECT_TRUE(q.is_quantized_module("model.layers.11.self_attn.q_proj"));  // a prefix covers whole name components
}

// A fixture quantized to FP8 (static activations, FP8 KV) by the writer qed quantize uses.
class QuantizedFixture : public ::testing::Test {
 protected:
  static std::vector<std::vector<int32_t>> samples() {
    std::vector<std::vector<int32_t>> s;
    for (int i = 0; i < 4; ++i) {
      std::vector<int32_t> ids;
      for (int t = 0; t < 24; ++t) ids.push_back(int32_t((i * 131 + t * 17) % 512));
      s.push_back(ids);
    }
    return s;
  }
  void quantize_to(const std::string& out) {
    CpuBackendOptions options;
    options.num_threads = 1;
    options.num_blocks = 4;
    CpuBackend backend(ModelConfig::from_file(kFixture + "/config.json"), Checkpoint::open(kFixture), options);
    const quant::CalibrationStats stats = quant::calibrate(backend, samples());
    quant::QuantizeOptions q;
    q.kv_cache_fp8 = true;
    quant::write_quantized_checkpoint(kFixture, out, q, &stats);
  }
  static std::vector<float> last_logits(const std::string& dir) {
    CpuBackendOptions options;
    options.num_threads = 1;
    options.num_blocks = 4;
    CpuBackend backend(ModelConfig::from_file(dir + "/config.json"), Checkpoint::open(dir), options);
    ForwardBatch batch;
    SequenceChunk& chunk = batch.sequences.emplace_back();
    chunk.tokens = {5, 77, 300, 12, 9, 410, 3, 250};
    chunk.block_table = {0};
    ForwardResult result;
    backend.forward(batch, result);
    return result.logits;
  }
  // A copy of `from` with tensors renamed (`rename` returns "" to drop one).
  static void rewrite(const std::string& from, const std::string& to,
                      const std::function<std::string(const std::string&)>& rename) {
    std::filesystem::create_directories(to);
    const Checkpoint checkpoint = Checkpoint::open(from);
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : checkpoint.names()) {
      const TensorInfo& t = checkpoint.get(name);
      const std::string renamed = rename(name);
      if (!renamed.empty()) tensors.push_back({renamed, t.dtype, t.shape, t.data});
    }
    write_safetensors(to + "/model.safetensors", tensors);
    std::filesystem::copy_file(from + "/config.json", to + "/config.json");
  }
  test::TempDir dir_;
};

TEST_F(QuantizedFixture, OtherBackendsRefuseItByName) {
  quantize_to(dir_.file("fp8"));
  const ModelConfig config = ModelConfig::from_file(dir_.file("fp8") + "/config.json");
  const Checkpoint checkpoint = Checkpoint::open(dir_.file("fp8"));
  EXPECT_NE(error_of([&] { ModelWeights::bind(checkpoint, config); }).find("the checkpoint is quantized (fp8"),
            std::string::npos);
  const ModelWeights w = ModelWeights::bind(checkpoint, config, true);
  EXPECT_EQ(w.layers[0].q_proj->dtype, DType::F8_E4M3);
  ASSERT_NE(w.layers[1].k_cache_scale, nullptr);
  ASSERT_NE(w.layers[1].down_proj_scales.input_scale, nullptr);
}

TEST_F(QuantizedFixture, WritingIsDeterministic) {
  quantize_to(dir_.file("a"));
  quantize_to(dir_.file("b"));
  EXPECT_EQ(read_text_file(dir_.file("a") + "/model.safetensors"),
            read_text_file(dir_.file("b") + "/model.safetensors"));
  EXPECT_EQ(read_text_file(dir_.file("a") + "/config.json"), read_text_file(dir_.file("b") + "/config.json"));
}

TEST_F(QuantizedFixture, KvScaleSpellingsOfVllmAndModelOptLoadTheSame) {
  quantize_to(dir_.file("fp8"));
  const std::vector<float> ours = last_logits(dir_.file("fp8"));
  for (const std::string form : {".self_attn.attn.", ".self_attn.K_proj."}) {
    const std::string out = dir_.file("renamed" + std::to_string(form.size()));
    rewrite(dir_.file("fp8"), out, [&](const std::string& name) {
      for (const char kv : {'k', 'v'}) {
        const std::string suffix = std::string(".self_attn.") + kv + "_scale";
        if (name.ends_with(suffix)) {
          std::string f = form;
          if (f == ".self_attn.K_proj.") f = std::string(".self_attn.") + kv + "_proj.";  // ModelOpt: k_proj.k_scale
          return name.substr(0, name.size() - suffix.size()) + f + kv + "_scale";
        }
      }
      return name;
    });
    EXPECT_EQ(last_logits(out), ours) << form;
  }
  // Without the scales the KV cache is not quantized: the logits must change (the FP8 KV path is live).
  rewrite(dir_.file("fp8"), dir_.file("nokv"), [](const std::string& name) {
    const bool kv_scale = name.ends_with(".self_attn.k_scale") || name.ends_with(".self_attn.v_scale");
    return kv_scale ? std::string() : name;
  });
  EXPECT_NE(last_logits(dir_.file("nokv")), ours);
}

TEST_F(QuantizedFixture, MissingInputScaleIsNamed) {
  quantize_to(dir_.file("fp8"));
  rewrite(dir_.file("fp8"), dir_.file("broken"), [](const std::string& name) {
    return name == "model.layers.1.mlp.up_proj.input_scale" ? std::string() : name;
  });
  const std::string error = error_of([&] { last_logits(dir_.file("broken")); });
  EXPECT_NE(error.find("missing tensor 'model.layers.1.mlp.up_proj.input_scale'"), std::string::npos) << error;
}

}  // namespace
}  // namespace qed
