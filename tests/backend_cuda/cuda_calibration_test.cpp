// qed quantize's calibration on the CUDA backend against the CPU reference calibration, on the HF fixtures. Same
// weights and tokens; the GPU's activations are bf16 where the CPU's are fp32, so each amax agrees only to bf16
// accuracy. Bound: 5% relative, the bound cuda_backend_test.cpp justifies for logits (about ten bf16 roundings,
// 2^-9 relative each, per layer over the fixtures' 2-3 layers; worst logit drift measured on an H200 2.4%): an amax
// is one activation's magnitude, computed through the same roundings. A wrong site (the o_proj input recorded as
// the down_proj input, K for V, pre-RoPE K) or a missed row moves an amax by far more on these random models.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../model/temp_dir.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#include "backend_test_util.h"
#include "model/safetensors.h"
#include "quant/calibration.h"
#include "quant/calibration_cuda.h"
#include "quant/quantized_checkpoint.h"

namespace qed::testing {
namespace {

constexpr float kAmaxTolerance = 5e-2f;

std::string fixture_dir(const std::string& name) {
  return std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name;
}

std::unique_ptr<CudaBackend> cuda_fixture(const std::string& name, bool graphs = false) {
  CudaBackendOptions options;
  options.cuda_graphs = graphs;
  options.num_blocks = 64;
  options.max_batched_tokens = 512;
  return CudaBackend::load(fixture_dir(name), options);
}

// Lengths below and above the prefill kernel's 32-row threshold, so both attention paths' K/V are recorded.
std::vector<std::vector<int32_t>> samples(int vocab) {
  std::mt19937 rng(2026);
  std::vector<std::vector<int32_t>> out;
  for (int length : {20, 45, 70, 9}) {
    std::vector<int32_t> ids(static_cast<size_t>(length));
    for (auto& id : ids) id = int32_t(rng() % uint32_t(vocab));
    out.push_back(ids);
  }
  return out;
}

struct Site {
  const char* name;
  float quant::LayerAmax::*field;
};
constexpr Site kSites[] = {{"qkv_input", &quant::LayerAmax::qkv_input},
                           {"o_input", &quant::LayerAmax::o_input},
                           {"gate_up_input", &quant::LayerAmax::gate_up_input},
                           {"down_input", &quant::LayerAmax::down_input},
                           {"k", &quant::LayerAmax::k},
                           {"v", &quant::LayerAmax::v}};

float relative(float a, float b) {
  return std::fabs(a - b) / std::max(std::fabs(a), std::fabs(b));
}

class CudaCalibration : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(CudaCalibration, AmaxMatchesTheCpuCalibrationWithinBf16Tolerance) {
  auto cpu = load_fixture_backend(GetParam());
  auto gpu = cuda_fixture(GetParam());
  const auto ids = samples(cpu->config().vocab_size);
  const quant::CalibrationStats want = quant::calibrate(*cpu, ids);
  const quant::CalibrationStats got = quant::calibrate(*gpu, ids);
  EXPECT_EQ(got.samples, want.samples);
  EXPECT_EQ(got.tokens, want.tokens);
  ASSERT_EQ(got.layers.size(), want.layers.size());
  float worst = 0.0f;
  for (size_t l = 0; l < want.layers.size(); ++l) {
    for (const Site& site : kSites) {
      const float w = want.layers[l].*site.field, g = got.layers[l].*site.field;
      ASSERT_GT(w, 0.0f) << "layer " << l << " " << site.name;
      EXPECT_LE(relative(w, g), kAmaxTolerance) << "layer " << l << " " << site.name << ": cpu " << w << " cuda " << g;
      worst = std::max(worst, relative(w, g));
    }
  }
  std::printf("[ calib    ] %s: worst relative amax difference cuda vs cpu %.3g\n", GetParam().c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(HfFixtures, CudaCalibration,
                         ::testing::Values("qwen2_gqa_bias", "qwen2_tied_mha", "llama3_rope_scaled"));

using CudaCalibrationOnce = CudaCalibration;

float scalar(const Checkpoint& c, const std::string& name) {
  const TensorInfo& t = c.get(name);
  EXPECT_EQ(t.dtype, DType::F32) << name;
  float v = 0;
  std::memcpy(&v, t.data, sizeof(v));
  return v;
}

TEST_F(CudaCalibrationOnce, WrittenScalesDifferByNoMoreThanTheAmaxTolerance) {
  const std::string name = "qwen2_gqa_bias";
  auto cpu = load_fixture_backend(name);
  auto gpu = cuda_fixture(name);
  const auto ids = samples(cpu->config().vocab_size);
  const quant::CalibrationStats cpu_stats = quant::calibrate(*cpu, ids);
  const quant::CalibrationStats gpu_stats = quant::calibrate(*gpu, ids);
  test::TempDir dir;
  quant::QuantizeOptions options;
  options.kv_cache_fp8 = true;
  quant::write_quantized_checkpoint(fixture_dir(name), dir.file("cpu"), options, &cpu_stats);
  quant::write_quantized_checkpoint(fixture_dir(name), dir.file("cuda"), options, &gpu_stats);
  const Checkpoint a = Checkpoint::open(dir.file("cpu")), b = Checkpoint::open(dir.file("cuda"));
  ASSERT_EQ(a.names(), b.names());
  int scales = 0;
  for (const std::string& tensor : a.names()) {
    const bool activation_scale =
        tensor.ends_with(".input_scale") || tensor.ends_with(".k_scale") || tensor.ends_with(".v_scale");
    if (activation_scale) {
      ++scales;
      EXPECT_LE(relative(scalar(a, tensor), scalar(b, tensor)), kAmaxTolerance) << tensor;
    } else {  // weights and their scales do not depend on calibration
      ASSERT_EQ(a.get(tensor).nbytes, b.get(tensor).nbytes) << tensor;
      EXPECT_EQ(std::memcmp(a.get(tensor).data, b.get(tensor).data, a.get(tensor).nbytes), 0) << tensor;
    }
  }
  EXPECT_EQ(scales, cpu->config().num_layers * (7 + 2));  // per layer 7 input scales, k and v
}

TEST_F(CudaCalibrationOnce, TwoRunsGiveIdenticalAmax) {
  auto gpu = cuda_fixture("llama3_rope_scaled");
  const auto ids = samples(gpu->config().vocab_size);
  const quant::CalibrationStats a = quant::calibrate(*gpu, ids), b = quant::calibrate(*gpu, ids);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    for (const Site& site : kSites) EXPECT_EQ(a.layers[l].*site.field, b.layers[l].*site.field) << l << site.name;
  }
}

TEST_F(CudaCalibrationOnce, RecordingChangesNoLogit) {
  auto gpu = cuda_fixture("qwen2_gqa_bias");
  ForwardBatch batch;
  SequenceChunk& chunk = batch.sequences.emplace_back();
  chunk.tokens = samples(gpu->config().vocab_size)[1];
  chunk.block_table = {0, 1, 2};
  chunk.logits_indices = {0, 10, 44};
  ForwardResult plain, recorded;
  gpu->forward(batch, plain);
  cuda::ActivationAmax recorder(gpu->config().num_layers);
  gpu->set_amax_recorder(&recorder);
  gpu->forward(batch, recorded);
  gpu->set_amax_recorder(nullptr);
  ASSERT_EQ(plain.logits.size(), recorded.logits.size());
  EXPECT_EQ(std::memcmp(plain.logits.data(), recorded.logits.data(), plain.logits.size() * sizeof(float)), 0);
  EXPECT_GT(recorder.read()[0][size_t(cuda::AmaxSite::K)], 0.0f);
}

// Decode steps with graphs enabled run eagerly while recording: a captured graph's padding rows (3 sequences
// padded to 4) would be counted, and a graph captured with the recorder would keep recording after it is unset.
TEST_F(CudaCalibrationOnce, DecodeStepsRecordTheSameWithGraphsEnabled) {
  std::vector<std::vector<float>> results;
  for (bool graphs : {false, true}) {
    auto gpu = cuda_fixture("qwen2_gqa_bias", graphs);
    cuda::ActivationAmax recorder(gpu->config().num_layers);
    gpu->set_amax_recorder(&recorder);
    const auto prompts = samples(gpu->config().vocab_size);
    std::vector<int32_t> cached;
    for (int step = 0; step < 5; ++step) {
      ForwardBatch batch;
      for (int s = 0; s < 3; ++s) {
        SequenceChunk& chunk = batch.sequences.emplace_back();
        const auto& prompt = prompts[size_t(s)];
        if (step == 0) {
          chunk.tokens = prompt;
        } else {
          chunk.tokens = {int32_t((step * 7 + s) % gpu->config().vocab_size)};
          chunk.num_cached = cached[size_t(s)];
        }
        chunk.block_table = iota_blocks(s * 8, 8);
      }
      ForwardResult result;
      gpu->forward(batch, result);
      cached.resize(3);
      for (int s = 0; s < 3; ++s) {
        cached[size_t(s)] = (step == 0 ? 0 : cached[size_t(s)]) + int(batch.sequences[size_t(s)].tokens.size());
      }
    }
    std::vector<float> flat;
    for (const auto& layer : recorder.read()) flat.insert(flat.end(), layer.begin(), layer.end());
    results.push_back(flat);
    gpu->set_amax_recorder(nullptr);
  }
  EXPECT_TRUE(results[0] == results[1]);
}

}  // namespace
}  // namespace qed::testing
