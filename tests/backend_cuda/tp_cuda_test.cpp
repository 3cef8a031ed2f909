// The tensor-parallel CUDA runner (backend/tp_cuda). NEVER RUN: written without access to a GPU; docs/tp.md.
//   TP=1 through the runner (one rank, NCCL over one device, the whole lm_head) is the plain CudaBackend's
//   computation: the fixtures' vocab sizes are multiples of 16, so no lm_head padding changes the GEMM shape, and an
//   all-reduce over one rank leaves its input as it is; so logits must be equal bit for bit.
//   TP=2 (skipped with fewer than 2 devices) sums bf16 partials of o_proj/down_proj across the ranks, a different
//   rounding than one GEMM: logits stay within the bf16 tolerance of the CPU reference (5% of the logit scale, as
//   cuda_backend_test), and greedy continuations equal TP=1's up to a first divergence that must be a near-tie in
//   the fp32 reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "../model/temp_dir.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#include "backend/tp_cuda/tp_cuda_backend.h"
#include "backend_test_util.h"
#include "core/error.h"
#include "quant/calibration.h"
#include "quant/quantized_checkpoint.h"

namespace qed::testing {
namespace {

constexpr float kBf16Tolerance = 5e-2f;

std::string fixture_path(const std::string& name) {
  return std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name;
}

CudaBackendOptions rank_options() {
  CudaBackendOptions options;
  options.cuda_graphs = false;
  options.num_blocks = 128;
  options.max_batched_tokens = 1024;
  options.max_logits_rows = 48;  // below the longest prompt: several lm_head passes
  return options;
}

std::unique_ptr<tp::TpCudaBackend> load_tp(const std::string& dir, int ranks) {
  tp::TpCudaOptions options;
  options.ranks = ranks;
  options.rank = rank_options();
  return tp::TpCudaBackend::load(dir, options);
}

int device_count() {
  return int(cuda::list_devices().size());
}

size_t argmax_row(const float* row, int n) {
  return size_t(std::max_element(row, row + n) - row);
}

// Prefill then one decode step per token, one sequence at a time; blocks [0, 16).
std::vector<int32_t> greedy_of(Backend& backend, const std::vector<int32_t>& prompt, size_t steps) {
  const int block_size = backend.kv_layout().block_size;
  const int vocab = backend.config().vocab_size;
  SequenceChunk chunk;
  chunk.tokens = prompt;
  std::vector<int32_t> out;
  while (out.size() < steps) {
    const size_t slots = size_t(chunk.num_cached) + chunk.tokens.size();
    chunk.block_table = iota_blocks(0, int((slots + size_t(block_size) - 1) / size_t(block_size)));
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    ForwardResult result;
    backend.forward(batch, result);
    const int32_t token = int32_t(argmax_row(result.logits.data(), vocab));
    out.push_back(token);
    chunk.num_cached += int32_t(chunk.tokens.size());
    chunk.tokens = {token};
  }
  return out;
}

class TpCuda : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(TpCuda, OneRankEqualsThePlainCudaBackend) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto tp1 = load_tp(fixture_path(GetParam()), 1);
  auto plain = CudaBackend::load(fixture_path(GetParam()), rank_options());
  for (const HfPrompt& prompt : fixture.prompts) {
    EXPECT_EQ(prefill_logits(*tp1, prompt.ids), prefill_logits(*plain, prompt.ids));
    EXPECT_EQ(greedy_of(*tp1, prompt.ids, 12), greedy_of(*plain, prompt.ids, 12));
  }
}

TEST_P(TpCuda, TwoRanksMatchCpuAndOneRank) {
  if (device_count() < 2) GTEST_SKIP() << "needs 2 CUDA devices, " << device_count() << " visible";
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto tp2 = load_tp(fixture_path(GetParam()), 2);
  auto tp1 = load_tp(fixture_path(GetParam()), 1);
  auto cpu = load_fixture_backend(GetParam(), 64);
  EXPECT_EQ(tp2->name(), "cuda-tp2");
  for (size_t p = 0; p < fixture.prompts.size(); ++p) {
    const HfPrompt& prompt = fixture.prompts[p];
    const std::vector<float> got = prefill_logits(*tp2, prompt.ids), want = prefill_logits(*cpu, prompt.ids);
    const float scale = std::max(1.0f, max_abs(want));
    std::printf("[ tp-cuda ] %s prompt %zu: TP=2 max|diff| vs CPU %.3g, vs TP=1 %.3g, scale %.3g\n",
                fixture.name.c_str(), p, double(max_abs_diff(got, want)),
                double(max_abs_diff(got, prefill_logits(*tp1, prompt.ids))), double(scale));
    EXPECT_LE(max_abs_diff(got, want), kBf16Tolerance * scale) << "prompt " << p;

    const size_t steps = prompt.greedy.size();
    const std::vector<int32_t> two = greedy_of(*tp2, prompt.ids, steps), one = greedy_of(*tp1, prompt.ids, steps);
    const size_t d = size_t(std::mismatch(two.begin(), two.end(), one.begin()).first - two.begin());
    if (d == steps) continue;
    // A divergence must be a near-tie of the fp32 reference on the shared context.
    std::vector<int32_t> context = prompt.ids;
    context.insert(context.end(), one.begin(), one.begin() + long(d));
    const std::vector<float> ref = prefill_logits(*cpu, context);
    const float* row = ref.data() + (context.size() - 1) * size_t(fixture.vocab);
    const float margin = std::fabs(row[one[d]] - row[two[d]]);
    std::printf("[ tp-cuda ] %s prompt %zu: TP=2 and TP=1 diverge at step %zu (%d vs %d), fp32 margin %.3g\n",
                fixture.name.c_str(), p, d, two[d], one[d], double(margin));
    EXPECT_LE(margin, 2.0f * kBf16Tolerance * std::max(1.0f, max_abs(ref))) << "prompt " << p << ": not a near-tie";
  }
}

// A speculative-decoding verify step (tree mask, repeated positions, hidden states) across two ranks.
TEST_P(TpCuda, TwoRanksTreeMaskedBatchMatchesCpu) {
  if (device_count() < 2) GTEST_SKIP() << "needs 2 CUDA devices";
  auto tp2 = load_tp(fixture_path(GetParam()), 2);
  auto cpu = load_fixture_backend(GetParam(), 64);
  for (Backend* backend : {static_cast<Backend*>(tp2.get()), static_cast<Backend*>(cpu.get())}) {
    ForwardBatch prefill;
    SequenceChunk& a = prefill.sequences.emplace_back();
    a.tokens = {5, 17, 99, 3, 250, 8, 61, 200, 11, 4, 90, 33, 7, 18, 2, 140, 66, 1};
    a.block_table = {0, 1};
    ForwardResult ignored;
    backend->forward(prefill, ignored);
    const std::vector<std::pair<int32_t, int32_t>> fork = {{1, 5}};
    backend->copy_kv_blocks(fork);
  }
  ForwardBatch batch;
  batch.want_hidden = true;
  SequenceChunk& tree = batch.sequences.emplace_back();
  tree.tokens = {12, 40, 41, 9};
  tree.num_cached = 18;
  tree.positions = {18, 19, 19, 20};
  tree.block_table = {0, 5};
  tree.attention_mask = {1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1};
  tree.logits_indices = {0, 1, 2, 3};
  ForwardResult got, want;
  tp2->forward(batch, got);
  cpu->forward(batch, want);
  ASSERT_EQ(got.rows, 4);
  EXPECT_LE(max_abs_diff(got.logits, want.logits), kBf16Tolerance * std::max(1.0f, max_abs(want.logits)));
  ASSERT_EQ(got.hidden.size(), want.hidden.size());
  EXPECT_LE(max_abs_diff(got.hidden, want.hidden), kBf16Tolerance * std::max(1.0f, max_abs(want.hidden)));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TpCuda, ::testing::ValuesIn(hf_fixture_names()),
                         [](const auto& test_param) { return test_param.param; });

// int8 weight-only (any GPU): per-channel scales sliced with the column-parallel rows, whole for o/down.
TEST(TpCudaQuantized, Int8WeightOnlyTwoRanksMatchOneRank) {
  if (device_count() < 2) GTEST_SKIP() << "needs 2 CUDA devices";
  const std::string src = fixture_path("qwen2_gqa_bias");
  test::TempDir tmp;
  quant::QuantizeOptions q;
  q.method = QuantMethod::Int8WeightOnly;
  q.per_channel = true;
  quant::write_quantized_checkpoint(src, tmp.path(), q, nullptr);
  auto tp2 = load_tp(tmp.path(), 2);
  auto tp1 = load_tp(tmp.path(), 1);
  const std::vector<int32_t> ids = {5, 77, 300, 12, 9, 410, 3, 250, 61, 8, 199, 40};
  const std::vector<float> one = prefill_logits(*tp1, ids);
  EXPECT_LE(max_abs_diff(prefill_logits(*tp2, ids), one), kBf16Tolerance * std::max(1.0f, max_abs(one)));
}

TEST(TpCudaErrors, RanksThatDoNotDivideTheHeadsAreOneLineErrors) {
  // The plan is checked before any device is touched: this runs without a GPU too.
  try {
    load_tp(fixture_path("qwen2_gqa_bias"), 3);
    FAIL() << "3 ranks for 4 heads were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not split over 3 ranks"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qed::testing
