// Quantized checkpoints on the CUDA backend against the CPU backend on the same checkpoint: the fixture
// qwen2_gqa_bias quantized by qed quantize's own calibration + writer (FP8 per tensor, FP8 per channel, int8
// weight-only), loaded by both backends.
//
// Tolerances (of the logit scale max(1, max|logit|), as cuda_backend_test.cpp): int8 weight-only 5%, the bf16
// bound, since both backends multiply the same int8 codes and scales and differ only in bf16 vs fp32
// activations. FP8 10%: the CUDA forward quantizes bf16-rounded activations where the CPU quantizes fp32 ones,
// so ~2^-9 / 2^-3 ≈ 1-2% of the E4M3 codes land one step (6%) apart, and the per-tensor q/k/v weights are
// requantized to their largest scale (vLLM's fused layout) on the GPU only; that adds ~1% per linear layer on top
// of the bf16 differences, over 2 layers × 4 linears. The measured worst is printed. Greedy continuations must be
// equal except where the CPU's own top-2 logits are within twice the tolerance (a near-tie either could take).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../model/temp_dir.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#include "backend_test_util.h"
#include "core/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "quant/calibration.h"
#include "quant/quantized_checkpoint.h"

namespace qed::testing {
namespace {

const std::string kFixtureName = "qwen2_gqa_bias";

struct Variant {
  const char* name;
  QuantMethod method;
  bool per_channel;
  float tolerance;       // of the logit scale
  bool dynamic = false;  // FP8 with dynamic activation scales (the static checkpoint without its input_scales)
  bool kv_fp8 = false;   // qed quantize --kv-cache fp8: k/v scales, an FP8 KV cache on both backends
};

// A copy of the checkpoint in `from` with activation_scheme "dynamic" and no input_scale tensors: the layout of
// vLLM's dynamic FP8 checkpoints, which qed quantize does not write.
void make_dynamic_copy(const std::string& from, const std::string& to) {
  std::filesystem::create_directories(to);
  nlohmann::json config = nlohmann::json::parse(std::ifstream(from + "/config.json"));
  config["quantization_config"]["activation_scheme"] = "dynamic";
  std::ofstream(to + "/config.json") << config.dump(2);
  const Checkpoint checkpoint = Checkpoint::open(from);
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : checkpoint.names()) {
    if (name.ends_with(".input_scale")) continue;
    const TensorInfo& t = checkpoint.get(name);
    tensors.push_back({name, t.dtype, t.shape, t.data});
  }
  write_safetensors(to + "/model.safetensors", tensors);
}

class QuantizedCudaParity : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    const std::vector<cuda::DeviceInfo> devices = cuda::list_devices();
    if (devices.empty()) GTEST_SKIP() << "no CUDA device";
    if (GetParam().method == QuantMethod::Fp8 && devices[0].sm_major * 10 + devices[0].sm_minor < 89) {
      GTEST_SKIP() << "FP8 GEMMs need sm_89 or newer";
    }
    fixture_ = load_hf_fixture(kFixtureName);
    dir_ = tmp_.file("quantized");
    const std::string source = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + kFixtureName;
    quant::QuantizeOptions options;
    options.method = GetParam().method;
    options.per_channel = GetParam().per_channel;
    options.kv_cache_fp8 = GetParam().kv_fp8;  // with scales, both backends keep an FP8 KV cache (auto)
    if (options.method == QuantMethod::Fp8) {
      auto calibration = load_fixture_backend(kFixtureName);
      std::vector<std::vector<int32_t>> samples;
      for (const HfPrompt& p : fixture_.prompts) samples.push_back(p.ids);
      const quant::CalibrationStats stats = quant::calibrate(*calibration, samples);
      if (GetParam().dynamic) {
        const std::string static_dir = tmp_.file("static");
        quant::write_quantized_checkpoint(source, static_dir, options, &stats);
        make_dynamic_copy(static_dir, dir_);
      } else {
        quant::write_quantized_checkpoint(source, dir_, options, &stats);
      }
    } else {
      quant::write_quantized_checkpoint(source, dir_, options, nullptr);
    }
    CpuBackendOptions cpu_options;
    cpu_options.num_threads = 2;
    cpu_options.num_blocks = 64;
    cpu_ = CpuBackend::load(dir_, cpu_options);
    CudaBackendOptions cuda_options;
    cuda_options.num_blocks = 64;
    cuda_options.max_batched_tokens = 1024;
    cuda_options.cuda_graphs = true;  // decode steps replay captured graphs of the quantized layers
    cuda_ = CudaBackend::load(dir_, cuda_options);
  }

  float scale_of(const std::vector<float>& logits) const { return std::max(1.0f, max_abs(logits)); }

  test::TempDir tmp_;
  std::string dir_;
  HfFixture fixture_;
  std::unique_ptr<CpuBackend> cpu_;
  std::unique_ptr<CudaBackend> cuda_;
};

TEST_P(QuantizedCudaParity, CheckpointIsQuantizedAsAsked) {
  EXPECT_EQ(cuda_->kv_cache_fp8(), GetParam().kv_fp8);
  EXPECT_EQ(cuda_->kv_cache_dtype(), GetParam().kv_fp8 ? "fp8" : "bf16");
  const ModelConfig config = ModelConfig::from_file(dir_ + "/config.json");
  EXPECT_EQ(config.quantization.method, GetParam().method);
  if (GetParam().method == QuantMethod::Fp8) {
    EXPECT_EQ(config.quantization.activations,
              GetParam().dynamic ? ActivationScheme::Dynamic : ActivationScheme::Static);
  }
  const Checkpoint checkpoint = Checkpoint::open(dir_);
  const TensorInfo& q = checkpoint.get("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.dtype, GetParam().method == QuantMethod::Fp8 ? DType::F8_E4M3 : DType::I8);
}

float mean_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += std::fabs(double(a[i]) - double(b[i]));
  return a.empty() ? 0.0f : float(sum / double(a.size()));
}

// FP8 on the two backends are two quantizations, not one: the GPU requantizes q/k/v to their largest scale (vLLM's
// fused layout) and quantizes bf16-rounded activations, so each E4M3 code that lands one step apart moves a logit
// by as much as the checkpoint's own quantization does. Measured on an H200: 0.5-1.07 at logit scale ~5 (10-19%),
// int8_wo 1.5%. So FP8 is held to the quantization noise itself, measured here (the CPU's FP8 vs its bf16
// logits): within 2x of it, and moved away from bf16 by at least half of it (a bf16 forward passing as FP8 fails).
TEST_P(QuantizedCudaParity, PrefillLogitsMatchTheCpuBackendOnTheSameCheckpoint) {
  const bool fp8 = GetParam().method == QuantMethod::Fp8;
  std::unique_ptr<CpuBackend> bf16 = fp8 ? load_fixture_backend(kFixtureName) : nullptr;
  for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
    const std::vector<int32_t>& ids = fixture_.prompts[p].ids;
    const std::vector<float> want = prefill_logits(*cpu_, ids);
    const std::vector<float> got = prefill_logits(*cuda_, ids);
    ASSERT_EQ(got.size(), want.size());
    const float scale = scale_of(want), diff = max_abs_diff(got, want);
    float bound = GetParam().tolerance * scale;
    if (fp8) {
      const std::vector<float> unquantized = prefill_logits(*bf16, ids);
      const float noise = max_abs_diff(want, unquantized);
      const float moved = mean_abs_diff(got, unquantized), cpu_moved = mean_abs_diff(want, unquantized);
      std::printf(
          "[ quant parity ] %s prompt %zu: CPU fp8 vs bf16 max|diff| %.3g (mean %.3g), CUDA vs bf16 mean %.3g\n",
          GetParam().name, p, double(noise), double(cpu_moved), double(moved));
      bound = std::max(bound, 2.0f * noise);
      EXPECT_GE(moved, 0.5f * cpu_moved) << GetParam().name << " prompt " << p << ": CUDA logits barely quantized";
    }
    std::printf("[ quant parity ] %s prompt %zu (%zu tokens): max|diff| vs CPU %.3g, scale %.3g, bound %.3g\n",
                GetParam().name, p, ids.size(), double(diff), double(scale), double(bound));
    EXPECT_LE(diff, bound) << GetParam().name << " prompt " << p;
  }
}

// Greedy tokens of one sequence (prefill, then one decode step per token) and the logits each was taken from.
struct Greedy {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
};

Greedy greedy(Backend& backend, const std::vector<int32_t>& prompt, int steps, int vocab) {
  Greedy out;
  SequenceChunk chunk;
  chunk.tokens = prompt;
  const int block_size = backend.kv_layout().block_size;
  for (int step = 0; step < steps; ++step) {
    const size_t slots = size_t(chunk.num_cached) + chunk.tokens.size();
    chunk.block_table = iota_blocks(0, int((slots + size_t(block_size) - 1) / size_t(block_size)));
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    ForwardResult result;
    backend.forward(batch, result);
    std::vector<float> row(result.logits.begin(), result.logits.begin() + vocab);
    const int32_t token = int32_t(std::max_element(row.begin(), row.end()) - row.begin());
    out.tokens.push_back(token);
    out.logits.push_back(std::move(row));
    chunk.num_cached += int32_t(chunk.tokens.size());
    chunk.tokens = {token};
  }
  return out;
}

TEST_P(QuantizedCudaParity, GreedyContinuationsAgreeExceptAtNearTies) {
  const int steps = 16;
  for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
    const std::vector<int32_t>& ids = fixture_.prompts[p].ids;
    const Greedy want = greedy(*cpu_, ids, steps, fixture_.vocab);
    const Greedy got = greedy(*cuda_, ids, steps, fixture_.vocab);
    for (int t = 0; t < steps; ++t) {
      if (got.tokens[size_t(t)] == want.tokens[size_t(t)]) continue;
      // The prefixes agree up to t, so the CPU's logits at t are those of the CUDA run's context.
      const std::vector<float>& row = want.logits[size_t(t)];
      const float gap = row[size_t(want.tokens[size_t(t)])] - row[size_t(got.tokens[size_t(t)])];
      std::printf("[ quant parity ] %s prompt %zu diverges at token %d (CPU logit gap %.3g)\n", GetParam().name, p, t,
                  double(gap));
      // Either logit may be off by the tolerance, so a flip needs a gap within twice it.
      EXPECT_LE(gap, 2.0f * GetParam().tolerance * scale_of(row))
          << GetParam().name << " prompt " << p << " step " << t << ": CUDA took " << got.tokens[size_t(t)] << ", CPU "
          << want.tokens[size_t(t)] << ", not a near-tie";
      break;  // the continuations differ from here on
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizedCudaParity,
                         ::testing::Values(Variant{"fp8_per_tensor", QuantMethod::Fp8, false, 0.10f},
                                           Variant{"fp8_per_channel", QuantMethod::Fp8, true, 0.10f},
                                           Variant{"fp8_dynamic", QuantMethod::Fp8, false, 0.10f, true},
                                           Variant{"fp8_kv_fp8", QuantMethod::Fp8, false, 0.10f, false, true},
                                           Variant{"int8_wo", QuantMethod::Int8WeightOnly, true, 0.05f}),
                         [](const ::testing::TestParamInfo<Variant>& param_info) {
                           return std::string(param_info.param.name);
                         });

// qed bench offline --dtype: random quantized weights of a config's shape run a forward with finite logits, the
// same for the same seed.
class RandomQuantizedWeights : public ::testing::TestWithParam<cuda::RandomWeightsDtype> {
 protected:
  void SetUp() override {
    const std::vector<cuda::DeviceInfo> devices = cuda::list_devices();
    if (devices.empty()) GTEST_SKIP() << "no CUDA device";
    if (GetParam() == cuda::RandomWeightsDtype::Fp8 && devices[0].sm_major * 10 + devices[0].sm_minor < 89) {
      GTEST_SKIP() << "FP8 GEMMs need sm_89 or newer";
    }
  }
};

TEST_P(RandomQuantizedWeights, ForwardGivesFiniteReproducibleLogits) {
  const ModelConfig config =
      ModelConfig::from_file(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + kFixtureName + "/config.json");
  CudaBackendOptions options;
  options.num_blocks = 16;
  options.max_batched_tokens = 256;
  std::vector<float> logits[2];
  for (auto& out : logits) {
    auto backend = CudaBackend::random(config, 11, options, GetParam());
    out = prefill_logits(*backend, {1, 5, 9, 200, 33, 7, 12, 99, 4, 250, 3, 18, 64, 2, 8, 71, 5, 6, 301, 42});
  }
  ASSERT_EQ(logits[0].size(), size_t(20) * size_t(config.vocab_size));
  for (float v : logits[0]) ASSERT_TRUE(std::isfinite(v));
  EXPECT_GT(max_abs(logits[0]), 0.0f);
  EXPECT_EQ(logits[0], logits[1]);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RandomQuantizedWeights,
                         ::testing::Values(cuda::RandomWeightsDtype::Fp8, cuda::RandomWeightsDtype::Int8WeightOnly));

// --kv-cache-dtype on a checkpoint with k/v scales: bf16 ignores them (the CPU reference of that is the same
// checkpoint without scales), fp8 on one without uses scale 1.0; auto follows the checkpoint.
TEST(CudaKvCacheDtype, ParsesTheFlagValues) {
  EXPECT_EQ(parse_kv_cache_dtype("auto"), KvCacheDtype::Auto);
  EXPECT_EQ(parse_kv_cache_dtype("bf16"), KvCacheDtype::Bf16);
  EXPECT_EQ(parse_kv_cache_dtype("fp8"), KvCacheDtype::Fp8);
  EXPECT_THROW(parse_kv_cache_dtype("fp8_e5m2"), Error);
}

// An FP8 cache holds twice the tokens of a bf16 one at the same memory fraction (1 byte per element instead of 2).
TEST(CudaKvCacheDtype, Fp8CacheHoldsTwiceTheTokensAtTheSameMemoryFraction) {
  if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + kFixtureName;
  CudaBackendOptions options;
  options.gpu_memory_fraction = 0.3f;
  options.max_batched_tokens = 256;
  int blocks[2] = {0, 0};
  size_t bytes[2] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    options.kv_cache_dtype = i == 0 ? KvCacheDtype::Bf16 : KvCacheDtype::Fp8;
    auto backend = CudaBackend::load(dir, options);  // destroyed before the next: the same free memory
    EXPECT_EQ(backend->kv_cache_fp8(), i == 1);
    blocks[i] = backend->kv_layout().num_blocks;
    bytes[i] = backend->kv_cache_bytes();
  }
  std::printf("[ kv capacity ] bf16 %d blocks (%zu bytes), fp8 %d blocks (%zu bytes)\n", blocks[0], bytes[0], blocks[1],
              bytes[1]);
  EXPECT_NEAR(double(blocks[1]) / double(blocks[0]), 2.0, 0.02);
  EXPECT_NEAR(double(bytes[1]) / double(bytes[0]), 1.0, 0.01);
}

// --kv-cache-dtype fp8 on a checkpoint without scales quantizes with scale 1.0 (vLLM's default): the reference
// is the CPU backend on a copy of the checkpoint with k_scale = v_scale = 1.0 written into every layer.
TEST(CudaKvCacheDtype, Fp8WithoutScalesMatchesTheCpuWithScaleOne) {
  if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + kFixtureName;
  test::TempDir tmp;
  const std::string with_scales = tmp.file("unit_kv_scales");
  std::filesystem::create_directories(with_scales);
  std::filesystem::copy_file(dir + "/config.json", with_scales + "/config.json");
  const Checkpoint checkpoint = Checkpoint::open(dir);
  const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : checkpoint.names()) {
    const TensorInfo& t = checkpoint.get(name);
    tensors.push_back({name, t.dtype, t.shape, t.data});
  }
  const float one = 1.0f;
  std::vector<std::string> names;
  for (int l = 0; l < config.num_layers; ++l) {
    names.push_back("model.layers." + std::to_string(l) + ".self_attn.k_scale");
    names.push_back("model.layers." + std::to_string(l) + ".self_attn.v_scale");
  }
  for (const std::string& name : names) tensors.push_back({name, DType::F32, {}, &one});
  write_safetensors(with_scales + "/model.safetensors", tensors);

  CpuBackendOptions cpu_options;
  cpu_options.num_threads = 2;
  cpu_options.num_blocks = 16;
  auto cpu_fp8 = CpuBackend::load(with_scales, cpu_options);
  auto cpu_bf16 = CpuBackend::load(dir, cpu_options);
  CudaBackendOptions options;
  options.num_blocks = 16;
  options.max_batched_tokens = 256;
  options.kv_cache_dtype = KvCacheDtype::Fp8;
  auto cuda_fp8 = CudaBackend::load(dir, options);
  ASSERT_TRUE(cuda_fp8->kv_cache_fp8());
  const std::vector<int32_t> ids = {1, 5, 9, 200, 33, 7, 12, 99, 4, 250, 3, 18, 64, 2, 8, 71};
  const std::vector<float> want = prefill_logits(*cpu_fp8, ids), got = prefill_logits(*cuda_fp8, ids);
  const std::vector<float> unquantized = prefill_logits(*cpu_bf16, ids);
  ASSERT_EQ(got.size(), want.size());
  const float scale = std::max(1.0f, max_abs(want)), diff = max_abs_diff(got, want);
  const float noise = max_abs_diff(want, unquantized);
  std::printf("[ kv fp8 scale 1 ] CUDA vs CPU max|diff| %.3g (scale %.3g); the CPU's fp8 vs fp32 cache %.3g\n",
              double(diff), double(scale), double(noise));
  // The bf16 parity bound (5% of the logit scale, cuda_backend_test.cpp), or twice the cache's own quantization
  // noise where that is larger (the CUDA forward quantizes bf16-rounded K/V, the CPU fp32 ones).
  EXPECT_LE(diff, std::max(0.05f * scale, 2.0f * noise));
}

TEST(CudaRandomWeightsDtype, ParsesTheBenchFlagValues) {
  EXPECT_EQ(cuda::parse_random_weights_dtype("bf16"), cuda::RandomWeightsDtype::Bf16);
  EXPECT_EQ(cuda::parse_random_weights_dtype("fp8"), cuda::RandomWeightsDtype::Fp8);
  EXPECT_EQ(cuda::parse_random_weights_dtype("int8_wo"), cuda::RandomWeightsDtype::Int8WeightOnly);
  EXPECT_THROW(cuda::parse_random_weights_dtype("fp4"), Error);
}

}  // namespace
}  // namespace qed::testing
