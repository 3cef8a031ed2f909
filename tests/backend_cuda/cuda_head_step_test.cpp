// The CUDA draft-head step (src/train/cuda/cuda_head_step.cpp) against the CPU trainer's fp32 step and the PyTorch
// fixture, and qed train-drafter --backend cuda end to end on the HF fixture model.
//
// Tolerances, from bf16: every GEMM operand (activations, weights, dlogits) is rounded to bf16, a relative error of
// at most 2^-9 per operand; a gradient entry is a sum over rows of products along a chain of such GEMMs (vocab
// projection, the ResBlocks, the input projection, the recurrence: up to ~6 roundings deep), so each entry is off by
// a few 2^-9 of the magnitude of its terms. Entries that cancel to near zero are relatively worse, so every entry is
// compared against its tensor's largest: |Δ| ≤ 2e-2 · max|g| (~10 bf16 ulps of the largest entry), and the tensor
// as a whole to 1e-2 in relative L2. (A float64 emulation of exactly these roundings on these shapes gives at most
// 6.4e-3 and 4.6e-3: tools/redrafter_bf16_error_estimate.py.) The loss is a mean of logsumexp − logit with logits off
// by ~2^-9 relative, mostly averaging out: within 1e-3 relative (emulated: ≤ 3e-5). Top-k hit counts can flip on
// near-ties: at most 2 per iteration and k here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/cuda/device.h"
#include "drafter_test_data.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "spec/redrafter_head.h"
#include "train/drafter_trainer.h"
#include "train/head_step.h"

namespace qed::train {
namespace {

namespace fs = std::filesystem;

class CudaHeadStepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  }
};

float bf16_round(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&x, &bits, 4);
  return x;
}

// Contexts and embeddings rounded to bf16, so both sides read the same base-model values (the CUDA backend's
// hidden states and bf16 embedding tables are bf16).
DraftRows random_rows(const spec::RedrafterConfig& c, size_t rows, int n_tokens, std::mt19937_64& rng) {
  DraftRows d;
  d.rows = rows;
  d.n_tokens = n_tokens;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (size_t i = 0; i < rows * size_t(c.hidden_size); ++i) d.context.push_back(bf16_round(normal(rng)));
  for (size_t i = 0; i < rows * size_t(n_tokens); ++i) {
    d.inputs.push_back(int32_t(rng() % uint64_t(c.vocab_size)));
    d.targets.push_back(rng() % 5 == 0 ? kIgnoreLabel : int32_t(rng() % uint64_t(c.vocab_size)));
  }
  return d;
}

std::vector<float> random_embeddings(const spec::RedrafterConfig& c, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> e(size_t(c.vocab_size) * size_t(c.hidden_size));
  for (float& x : e) x = bf16_round(normal(rng));
  return e;
}

void expect_gradients_close(spec::RedrafterHead& got, spec::RedrafterHead& want, float entry_tol, double l2_tol) {
  const HeadTensors g = head_tensors(got), w = head_tensors(want);
  ASSERT_EQ(g.params.size(), w.params.size());
  for (size_t k = 0; k < g.params.size(); ++k) {
    float scale = 0.0f;
    double diff2 = 0.0, norm2 = 0.0;
    for (float x : w.params[k]) scale = std::max(scale, std::fabs(x));
    for (size_t j = 0; j < g.params[k].size(); ++j) {
      const double d = double(g.params[k][j]) - double(w.params[k][j]);
      diff2 += d * d;
      norm2 += double(w.params[k][j]) * double(w.params[k][j]);
      ASSERT_NEAR(g.params[k][j], w.params[k][j], entry_tol * scale + 1e-7f) << g.names[k] << "[" << j << "]";
    }
    EXPECT_LE(std::sqrt(diff2), l2_tol * std::sqrt(norm2) + 1e-9) << g.names[k];
  }
}

void expect_metrics_close(const DraftMetrics& got, const DraftMetrics& want) {
  ASSERT_EQ(got.loss.size(), want.loss.size());
  EXPECT_NEAR(got.total_loss(), want.total_loss(), 1e-3 * want.total_loss());
  for (size_t i = 0; i < want.loss.size(); ++i) {
    EXPECT_NEAR(got.loss[i], want.loss[i], 1e-3 * want.loss[i] + 1e-6) << "redrafter" << i << "_loss";
    EXPECT_EQ(got.targets[i], want.targets[i]);
    for (size_t k = 0; k < want.hits[i].size(); ++k) {
      EXPECT_LE(std::abs(got.hits[i][k] - want.hits[i][k]), 2) << "redrafter" << i << "_top" << k + 1;
    }
  }
}

struct Case {
  const char* name;
  int hidden, exit_dim, layers, vocab;
  bool rnn;
  int chunk_rows;
};

class CudaHeadStepCases : public CudaHeadStepTest, public ::testing::WithParamInterface<Case> {};

TEST_P(CudaHeadStepCases, LossMetricsAndGradientsMatchTheCpuStepAndAdamWFollows) {
  const Case& p = GetParam();
  spec::RedrafterConfig config;
  config.hidden_size = p.hidden;
  config.exit_dim = p.exit_dim;
  config.num_draft_layers = p.layers;
  config.vocab_size = p.vocab;
  config.rnn = p.rnn;
  std::mt19937_64 rng(17);
  const std::vector<float> embeddings = random_embeddings(config, rng);
  // Two micro-batches accumulated into one step, as --grad-accum 2 does.
  const DraftRows first = random_rows(config, 61, 3, rng), second = random_rows(config, 40, 3, rng);

  spec::RedrafterHead cpu_head = initial_head(config, 5), cuda_head = initial_head(config, 5);
  const HeadTensors t = head_tensors(cpu_head);
  const AdamWConfig adam_config{.weight_decay = 0.01};
  AdamW cpu_adam(adam_config, t.sizes, t.decays), cuda_adam(adam_config, t.sizes, t.decays);
  auto cpu = make_cpu_head_step({&cpu_head, &cpu_adam, adam_config, embeddings, 3}, nullptr);
  auto gpu = make_cuda_head_step({&cuda_head, &cuda_adam, adam_config, embeddings, 3},
                                 {.device = 0, .logits_chunk_rows = p.chunk_rows});
  for (HeadStep* step : {cpu.get(), gpu.get()}) step->zero_grads();
  for (const DraftRows* rows : {&first, &second}) {
    const DraftMetrics want = cpu->accumulate(*rows, 0.5f);
    const DraftMetrics got = gpu->accumulate(*rows, 0.5f);
    expect_metrics_close(got, want);
  }
  spec::RedrafterHead cpu_grads(config), cuda_grads(config);
  cpu->gradients(cpu_grads);
  gpu->gradients(cuda_grads);
  expect_gradients_close(cuda_grads, cpu_grads, 2e-2f, 1e-2);

  // One AdamW step: the same clipped norm, and the update (≈ ±lr per entry on a first step) of the same sign
  // wherever the gradient is not lost in bf16 noise.
  const double lr = 1e-3;
  const double cpu_norm = cpu->apply(lr, 0.5), gpu_norm = gpu->apply(lr, 0.5);
  EXPECT_NEAR(gpu_norm, cpu_norm, 1e-2 * cpu_norm);
  gpu->sync_to_host();
  EXPECT_EQ(cuda_adam.steps(), 1);
  const HeadTensors a = head_tensors(cpu_head), b = head_tensors(cuda_head);
  size_t agree = 0, total = 0;
  for (size_t k = 0; k < a.params.size(); ++k) {
    for (size_t j = 0; j < a.params[k].size(); ++j) {
      ++total;
      agree += std::fabs(a.params[k][j] - b.params[k][j]) <= 1e-2 * lr ? 1 : 0;
      ASSERT_LE(std::fabs(a.params[k][j] - b.params[k][j]), 2.01 * lr) << a.names[k] << "[" << j << "]";
    }
  }
  EXPECT_GE(double(agree), 0.97 * double(total)) << agree << " of " << total << " entries updated alike";
}

INSTANTIATE_TEST_SUITE_P(Heads, CudaHeadStepCases,
                         ::testing::Values(Case{"rnn_no_proj", 32, 64, 2, 1000, true, 0},
                                           Case{"rnn_input_proj_chunked", 32, 48, 2, 1000, true, 16},
                                           Case{"cumsum_no_proj_unaligned", 24, 48, 1, 997, false, 7},
                                           Case{"rnn_no_blocks", 16, 32, 0, 512, true, 0}),
                         [](const ::testing::TestParamInfo<Case>& param) { return std::string(param.param.name); });

// PyTorch's float64 loss and gradients (tests/fixtures/redrafter_grad, tools/make_redrafter_grad_fixture.py).
void expect_matches_torch(const std::string& name) {
  const std::string dir = std::string(QED_SOURCE_DIR) + "/tests/fixtures/redrafter_grad/" + name;
  if (!fs::exists(dir + "/fixture.safetensors")) GTEST_SKIP() << dir << " absent";
  spec::RedrafterHead head = spec::RedrafterHead::load(dir);
  const SafetensorsFile fixture(dir + "/fixture.safetensors");
  auto tensor = [&](const std::string& t) { return fixture_tensor(fixture, t); };
  const std::vector<float> embeddings = tensor("embeddings"), per_iteration = tensor("loss_per_iteration");
  const std::vector<float> accuracy = tensor("topk_accuracy");
  const int n_tokens = int(per_iteration.size()), top_k = int(accuracy.size()) / n_tokens;
  const DraftRows rows = fixture_draft_rows(fixture, head.config().hidden_size, n_tokens);
  const HeadTensors t = head_tensors(head);
  AdamW adam(AdamWConfig{}, t.sizes, t.decays);
  auto gpu = make_cuda_head_step({&head, &adam, AdamWConfig{}, embeddings, top_k}, {});
  gpu->zero_grads();
  const DraftMetrics m = gpu->accumulate(rows, 1.0f);
  // The fixture's inputs are fp32, not bf16: one more rounding of the contexts and embeddings, so 1e-2 on the loss
  // and 3e-2 of each tensor's largest gradient.
  EXPECT_NEAR(m.total_loss(), tensor("loss")[0], 1e-2 * std::abs(tensor("loss")[0]));
  for (int i = 0; i < n_tokens; ++i) {
    EXPECT_NEAR(m.loss[size_t(i)], per_iteration[size_t(i)], 1e-2 * per_iteration[size_t(i)]) << i;
    for (int k = 0; k < top_k; ++k) {
      const double ours = double(m.hits[size_t(i)][size_t(k)]) / double(m.targets[size_t(i)]);
      EXPECT_NEAR(ours, accuracy[size_t(i * top_k + k)], 2.01 / double(m.targets[size_t(i)]))
          << "redrafter" << i << "_top" << k + 1;
    }
  }
  spec::RedrafterHead grads(head.config());
  gpu->gradients(grads);
  const HeadTensors g = head_tensors(grads);
  for (size_t k = 0; k < g.names.size(); ++k) {
    const std::vector<float> want = tensor("grad." + g.names[k]);
    ASSERT_EQ(want.size(), g.params[k].size()) << g.names[k];
    float scale = 0.0f;
    for (float x : want) scale = std::max(scale, std::fabs(x));
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_NEAR(g.params[k][j], want[j], 3e-2f * scale + 1e-7f) << g.names[k] << "[" << j << "]";
    }
  }
}

TEST_F(CudaHeadStepTest, MatchesTheTorchFixtureWithRnnAndInputProjection) {
  expect_matches_torch("rnn_input_proj");
}

TEST_F(CudaHeadStepTest, MatchesTheTorchFixtureWithCumulativeStateAndNoProjection) {
  expect_matches_torch("cumsum_no_proj");
}

// qed train-drafter --backend cuda on the HF fixture model: the counting task of tests/train/drafter_trainer_test.cpp.
fs::path temp_dir(const std::string& name) {
  return fresh_temp_dir("qed_cuda_train_" + name);
}

TrainDrafterOptions counting_options(const fs::path& dir, const std::string& data, const std::string& backend) {
  TrainDrafterOptions o;
  o.model_dir = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_tied_mha";
  o.data_path = data;
  o.out_dir = (dir / ("out_" + backend)).string();
  o.backend = backend;
  o.n_tokens = 2;
  o.num_layers = 1;
  o.batch = 2;
  o.grad_accum = 2;
  o.epochs = 5;  // 30 steps, as the CPU trainer's loss test
  o.lr = 1e-2;
  o.threads = 2;
  o.progress = false;
  o.gpu_memory_fraction = 0.1f;
  return o;
}

std::vector<float> all_weights(const std::string& dir) {
  spec::RedrafterHead head = spec::RedrafterHead::load(dir);
  std::vector<float> w;
  for (const std::span<float>& t : head_tensors(head).params) w.insert(w.end(), t.begin(), t.end());
  return w;
}

TEST_F(CudaHeadStepTest, TrainingLowersTheLossAndEndsNearTheCpuRunsWeights) {
  const fs::path dir = temp_dir("steps");
  const std::string data = write_counting_data(dir, 24);
  const TrainDrafterResult gpu = train_drafter(counting_options(dir, data, "cuda"));
  const TrainDrafterResult cpu = train_drafter(counting_options(dir, data, "cpu"));
  ASSERT_EQ(gpu.steps, cpu.steps);
  std::ifstream in(dir / "out_cuda" / "metrics.jsonl");
  std::string line;
  std::vector<double> losses;
  while (std::getline(in, line)) losses.push_back(nlohmann::json::parse(line).at("loss").get<double>());
  ASSERT_EQ(losses.size(), size_t(gpu.steps));
  // The first step runs at lr 0 (warmup), so steps 2-3 against the last two, as tests/train does for the CPU.
  ASSERT_EQ(losses.size(), 30u);
  const double first = losses[1] + losses[2], last = losses[28] + losses[29];
  EXPECT_LT(last, 0.6 * first) << "first " << first / 2 << " last " << last / 2;
  EXPECT_NEAR(gpu.last.total_loss(), cpu.last.total_loss(), 0.1 * cpu.last.total_loss());

  // Both runs start from the same initialisation: the CUDA run covers most of the CPU run's displacement, the
  // same way (bf16 noise flips the sign of Adam's ±lr update only where a gradient entry is near zero).
  const std::vector<float> w_gpu = all_weights((dir / "out_cuda").string()),
                           w_cpu = all_weights((dir / "out_cpu").string());
  TrainDrafterOptions init = counting_options(dir, data, "cpu");
  init.out_dir = (dir / "out_init").string();
  init.max_steps = 1;
  init.lr = 1e-12;  // one step at lr ~0: the initial weights, written where a head can be loaded
  train_drafter(init);
  const std::vector<float> w_init = all_weights(init.out_dir);
  ASSERT_EQ(w_gpu.size(), w_cpu.size());
  double diff2 = 0.0, moved2 = 0.0;
  for (size_t i = 0; i < w_cpu.size(); ++i) {
    diff2 += double(w_gpu[i] - w_cpu[i]) * double(w_gpu[i] - w_cpu[i]);
    moved2 += double(w_cpu[i] - w_init[i]) * double(w_cpu[i] - w_init[i]);
  }
  // The CPU run's base hidden states are fp32, the CUDA backend's bf16: the trajectories share the start and the
  // direction, not every step.
  EXPECT_LE(std::sqrt(diff2), 0.5 * std::sqrt(moved2))
      << "|w_cuda - w_cpu| " << std::sqrt(diff2) << ", |w_cpu - w_init| " << std::sqrt(moved2);
  fs::remove_all(dir);
}

TEST_F(CudaHeadStepTest, ACpuCheckpointResumesOnCudaToTheEnd) {
  const fs::path dir = temp_dir("resume");
  const std::string data = write_counting_data(dir, 24);
  TrainDrafterOptions o = counting_options(dir, data, "cpu");
  o.save_every = 2;
  o.stop_after = 4;
  train_drafter(o);
  o.backend = "cuda";
  o.stop_after = 0;
  o.resume = true;
  const TrainDrafterResult resumed = train_drafter(o);
  EXPECT_EQ(resumed.steps, resumed.total_steps);
  const spec::RedrafterHead head = spec::RedrafterHead::load(o.out_dir);  // what --spec redrafter --drafter loads
  EXPECT_EQ(head.config().hidden_size, 64);
  std::ifstream in(fs::path(o.out_dir) / "metrics.jsonl");
  std::string line;
  int64_t lines = 0, last = 0;
  while (std::getline(in, line)) {
    last = nlohmann::json::parse(line).at("step").get<int64_t>();
    ++lines;
  }
  EXPECT_EQ(lines, resumed.total_steps);
  EXPECT_EQ(last, resumed.total_steps);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace qed::train
