// Block-wise FP8 (transformers' FineGrainedFP8Config / DeepSeek-V3 layout): the quantization_config fields, the
// per-token-group activation op, and a fixture model written in the layout by a test helper, loaded and run by the
// CPU backend (exactly) and as the CUDA backend runs it (weights dequantized to bf16, activations unquantized).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../model/temp_dir.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/quant_ops.h"
#include "block_fp8_checkpoint.h"
#include "core/dtype.h"
#include "core/error.h"
#include "model/model_config.h"
#include "model/quant_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "quant_config_test_util.h"

namespace qed {
namespace {

using nlohmann::json;

const std::string kFixture = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_gqa_bias";

using test::error_of;
using test::parse;

TEST(BlockFp8Config, WeightBlockSizeAndModulesToNotConvert) {
  const QuantizationConfig q = parse(R"({"quant_method": "fp8", "activation_scheme": "dynamic",
    "weight_block_size": [128, 64], "modules_to_not_convert": ["lm_head", "layers.*.mlp.down_proj"]})");
  EXPECT_EQ(q.method, QuantMethod::Fp8);
  EXPECT_EQ(q.activations, ActivationScheme::Dynamic);
  EXPECT_TRUE(q.block_wise());
  EXPECT_EQ(q.block_out, 128);
  EXPECT_EQ(q.block_in, 64);
  // transformers' rule: substring of the parameter name with digit runs as '*'.
  EXPECT_FALSE(q.is_quantized_module("model.layers.17.mlp.down_proj"));
  EXPECT_TRUE(q.is_quantized_module("model.layers.17.mlp.up_proj"));
  const QuantizationConfig v5 = parse(R"({"quant_method": "fp8", "weight_block_size": [128, 128],
    "modules_to_not_convert": ["model.layers.1.mlp"]})");
  EXPECT_FALSE(v5.is_quantized_module("model.layers.1.mlp.up_proj"));
  EXPECT_TRUE(v5.is_quantized_module("model.layers.0.mlp.up_proj"));
  EXPECT_FALSE(q.is_quantized_module("lm_head"));
  EXPECT_FALSE(parse(R"({"quant_method": "fp8"})").block_wise());
  EXPECT_TRUE(parse(R"({"quant_method": "fp8", "weight_block_size": null})").quantized());
}

TEST(BlockFp8Config, BadFieldsAreOneLineErrors) {
  EXPECT_NE(error_of([] { parse(R"({"quant_method": "fp8", "weight_block_size": [128]})"); }).find("two positive"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse(R"({"quant_method": "fp8", "weight_block_size": [0, 128]})"); }).find("two positive"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { parse(R"({"quant_method": "fp8", "weight_block_size": ["128", 128]})"); }).find("two positive"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              parse(R"({"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]})");
            }).find("needs activation_scheme dynamic"),
            std::string::npos);
}

TEST(BlockFp8Ops, EachGroupGetsItsOwnScale) {
  // Two groups of 4: amax 2 and amax 448 * 4; by hand, 0.3 / (2 / 448) = 67.2 rounds to the E4M3 value 64 (steps
  // of 8 in [64, 128)), and 0.5 / (2 / 448) = 112 is exact.
  const std::vector<float> x = {1.0f, 0.3f, -2.0f, 0.5f, 1792.0f, 3.0f, -100.0f, 0.0f};
  std::vector<float> y(x.size());
  EXPECT_TRUE(cpu::fake_quantize_fp8_per_group(x.data(), x.size(), 4, y.data()));
  const float s0 = 2.0f / 448.0f;
  EXPECT_EQ(y[1], 64.0f * s0);
  EXPECT_EQ(y[3], 112.0f * s0);
  EXPECT_EQ(y[2], -2.0f);  // the amax maps to 448 and back
  // Group 1's scale is 4: 3 / 4 = 0.75 is exact in E4M3, 100 / 4 = 25 rounds to 24 (steps of 2 in [16, 32)).
  EXPECT_EQ(y[4], 1792.0f);
  EXPECT_EQ(y[5], 3.0f);
  EXPECT_EQ(y[6], -96.0f);
  EXPECT_EQ(y[7], 0.0f);
  // An all-zero group stays zero (vLLM's eps keeps the scale positive).
  const std::vector<float> zeros(8, 0.0f);
  cpu::fake_quantize_fp8_per_group(zeros.data(), zeros.size(), 8, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
  // A NaN is reported (the CPU backend refuses it, as for per-tensor dynamic scales).
  std::vector<float> with_nan = x;
  with_nan[5] = std::nanf("");
  EXPECT_FALSE(cpu::fake_quantize_fp8_per_group(with_nan.data(), with_nan.size(), 4, y.data()));
}

class BlockFp8Fixture : public ::testing::Test {
 protected:
  static std::vector<float> logits(const std::string& dir, const std::vector<int32_t>& ids) {
    CpuBackendOptions options;
    options.num_threads = 1;
    options.num_blocks = 4;
    CpuBackend backend(ModelConfig::from_file(dir + "/config.json"), Checkpoint::open(dir), options);
    ForwardBatch batch;
    SequenceChunk& chunk = batch.sequences.emplace_back();
    chunk.tokens = ids;
    chunk.block_table = {0, 1, 2, 3};
    for (int32_t i = 0; i < int32_t(ids.size()); ++i) chunk.logits_indices.push_back(i);
    ForwardResult result;
    backend.forward(batch, result);
    return result.logits;
  }
  static double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0.0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
    return m;
  }
  // Mean over positions of KL(softmax(p) || softmax(q)), rows of `vocab` logits.
  static double mean_kl(const std::vector<float>& p, const std::vector<float>& q, size_t vocab) {
    double total = 0.0;
    const size_t rows = p.size() / vocab;
    for (size_t r = 0; r < rows; ++r) {
      auto log_softmax = [&](const std::vector<float>& x) {
        std::vector<double> out(vocab);
        double m = -1e300, sum = 0.0;
        for (size_t i = 0; i < vocab; ++i) m = std::max(m, double(x[r * vocab + i]));
        for (size_t i = 0; i < vocab; ++i) sum += std::exp(double(x[r * vocab + i]) - m);
        for (size_t i = 0; i < vocab; ++i) out[i] = double(x[r * vocab + i]) - m - std::log(sum);
        return out;
      };
      const std::vector<double> lp = log_softmax(p), lq = log_softmax(q);
      for (size_t i = 0; i < vocab; ++i) total += std::exp(lp[i]) * (lp[i] - lq[i]);
    }
    return total / double(rows);
  }
  static double max_abs(const std::vector<float>& a) {
    double m = 0.0;
    for (float v : a) m = std::max(m, std::fabs(double(v)));
    return m;
  }
  // Blocks of 48 × 32 on the fixture (hidden 64, kv 32, intermediate 160): partial output blocks everywhere.
  std::string write_block(const std::string& name) {
    const std::string out = dir_.file(name);
    test::write_block_fp8_checkpoint(kFixture, out, 48, 32, {"model.layers.1.mlp.down_proj.weight"},
                                     {"layers.1.mlp.down_proj"});
    return out;
  }
  test::TempDir dir_;
};

TEST_F(BlockFp8Fixture, WeightsAreCodesTimesTheirBlocksScale) {
  const std::string dir = write_block("block");
  const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
  const Checkpoint checkpoint = Checkpoint::open(dir);
  const ModelWeights w = ModelWeights::bind(checkpoint, config, true);
  const LayerWeights& l0 = w.layers[0];
  ASSERT_EQ(l0.gate_proj->dtype, DType::F8_E4M3);
  ASSERT_NE(l0.gate_proj_scales.block_scale, nullptr);
  EXPECT_EQ(l0.gate_proj_scales.weight_scale, nullptr);
  EXPECT_EQ(l0.gate_proj_scales.input_scale, nullptr);
  // modules_to_not_convert: layer 1's down_proj stays bf16, layer 0's is quantized.
  EXPECT_EQ(w.layers[1].down_proj->dtype, DType::BF16);
  EXPECT_FALSE(w.layers[1].down_proj_scales.quantized());
  EXPECT_EQ(l0.down_proj->dtype, DType::F8_E4M3);

  const TensorInfo& q = *l0.gate_proj;  // [160, 64]: block rows 0-47, 48-95, 96-143, 144-159; columns 0-31, 32-63
  const TensorInfo& s = *l0.gate_proj_scales.block_scale;
  ASSERT_EQ(s.shape, (std::vector<int64_t>{4, 2}));
  const std::vector<float> dequantized = linear_to_f32(q, l0.gate_proj_scales);
  for (const auto& [r, c] :
       std::vector<std::pair<int, int>>{{0, 0}, {47, 31}, {48, 32}, {95, 63}, {144, 0}, {159, 63}}) {
    const size_t i = size_t(r) * 64 + size_t(c);
    EXPECT_EQ(dequantized[i], f8e4m3_to_float(q.data[i]) * s.at(size_t(r / 48) * 2 + size_t(c / 32))) << r << "," << c;
  }
  // The blocks' scales differ, so a wrong block index would show.
  EXPECT_NE(s.at(0), s.at(1));
  EXPECT_NE(s.at(0), s.at(2));
}

TEST_F(BlockFp8Fixture, CpuLogitsAreCloseToBf16AndTheCudaChoiceCloseToThem) {
  const std::string block = write_block("block");
  const std::string dequantized = dir_.file("dequantized");
  test::write_dequantized_bf16_checkpoint(block, dequantized);
  const std::vector<int32_t> ids = {5, 77, 300, 12, 9, 410, 3, 250, 17, 480};
  const std::vector<float> bf16 = logits(kFixture, ids);
  const std::vector<float> exact = logits(block, ids);
  const std::vector<float> unquantized_inputs = logits(dequantized, ids);
  const double scale = max_abs(bf16);
  const double quant_error = max_abs_diff(exact, bf16);
  const double choice_error = max_abs_diff(unquantized_inputs, exact);
  RecordProperty("block_vs_bf16_max_abs", std::to_string(quant_error));
  RecordProperty("dequantized_bf16_vs_block_max_abs", std::to_string(choice_error));
  const double kl_block = mean_kl(bf16, exact, 512), kl_choice = mean_kl(exact, unquantized_inputs, 512);
  const double kl_choice_bf16 = mean_kl(bf16, unquantized_inputs, 512);
  std::printf(
      "logits max |x| %.4g; block vs bf16: max |d| %.4g, KL %.3g; dequantized-to-bf16 weights with unquantized "
      "inputs (the CUDA backend's choice) vs block: %.4g, KL %.3g; that vs bf16 KL %.3g\n",
      scale, quant_error, kl_block, choice_error, kl_choice, kl_choice_bf16);
  EXPECT_GT(quant_error, 0.0);   // the quantization is live
  EXPECT_GT(choice_error, 0.0);  // and skipping the activations' quantization is not the exact format
  EXPECT_GT(max_abs_diff(unquantized_inputs, bf16), 0.0);  // the weights are the FP8 ones, not the originals
  // The fixture is random-init with near-tied logits (docs/quantize.md "Accuracy": per-tensor FP8 gives KL 1.2e-2
  // against bf16 here). Block-wise FP8 must be no worse than that order, and the CUDA backend's choice must stay as
  // close to the exact format as the format is to bf16 (both bounds 4x that KL).
  EXPECT_LT(kl_block, 0.05);
  EXPECT_LT(kl_choice, 0.05);
}

TEST_F(BlockFp8Fixture, BrokenCheckpointsAreNamedErrors) {
  const std::string block = write_block("block");
  auto bind_error = [](const std::string& dir) {
    return error_of([&] {
      const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
      const Checkpoint checkpoint = Checkpoint::open(dir);
      ModelWeights::bind(checkpoint, config, true);
    });
  };
  // A copy of the block checkpoint with `scale_name` replaced by a per-tensor scale (replace) or dropped.
  const float one = 1.0f;
  auto rewrite = [&](const std::string& to, const std::string& scale_name, bool replace) {
    std::filesystem::create_directories(to);
    const Checkpoint source = Checkpoint::open(block);
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : source.names()) {
      const TensorInfo& t = source.get(name);
      if (name != scale_name) {
        tensors.push_back({name, t.dtype, t.shape, t.data});
      } else if (replace) {
        tensors.push_back({name, DType::F32, {}, &one});
      }
    }
    write_safetensors(to + "/model.safetensors", tensors);
    std::filesystem::copy_file(block + "/config.json", to + "/config.json");
    return to;
  };
  std::string error = bind_error(rewrite(dir_.file("wrong"), "model.layers.0.self_attn.k_proj.weight_scale_inv", true));
  EXPECT_NE(error.find("scale 'model.layers.0.self_attn.k_proj.weight_scale_inv' has shape [], expected [1, 2]"),
            std::string::npos)
      << error;
  // A [1, n] grid saved squeezed to [n] (as some transformers versions do) reads the same.
  {
    const std::string squeezed = dir_.file("squeezed");
    std::filesystem::create_directories(squeezed);
    const Checkpoint source = Checkpoint::open(block);
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : source.names()) {
      const TensorInfo& t = source.get(name);
      std::vector<int64_t> shape = t.shape;
      if (name == "model.layers.0.self_attn.k_proj.weight_scale_inv") shape = {2};  // [1, 2]
      tensors.push_back({name, t.dtype, shape, t.data});
    }
    write_safetensors(squeezed + "/model.safetensors", tensors);
    std::filesystem::copy_file(block + "/config.json", squeezed + "/config.json");
    EXPECT_EQ(bind_error(squeezed), "");
    EXPECT_EQ(logits(squeezed, {1, 2, 3}), logits(block, {1, 2, 3}));
  }
  error = bind_error(rewrite(dir_.file("missing"), "model.layers.1.mlp.up_proj.weight_scale_inv", false));
  EXPECT_NE(error.find("missing tensor 'model.layers.1.mlp.up_proj.weight_scale_inv'"), std::string::npos) << error;
  // Blocks whose columns do not tile the input (64 columns in blocks of 48).
  json config = json::parse(std::ifstream(block + "/config.json"));
  config["quantization_config"]["weight_block_size"] = {32, 48};
  std::ofstream(block + "/config.json") << config.dump();
  error = bind_error(block);
  EXPECT_NE(error.find("64 input columns, not a multiple of weight_block_size[1] = 48"), std::string::npos) << error;
}

}  // namespace
}  // namespace qed
