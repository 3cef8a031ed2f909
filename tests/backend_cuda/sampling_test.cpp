// GPU sampling against the CPU reference sampler (backend/sampling.h) on random logits: the same seed and step
// must draw the same token, since both use sampling_uniform(seed, step) and HF's filter semantics; they differ only
// in the order of double-precision sums (~1e-16 relative), which moves a decision only when u or a top-p threshold
// lies within that distance of a cumulative sum: never in practice, so tokens must be identical. Logprobs are
// computed in double on both sides and rounded to float: they may differ by a float ulp, bounded here by 1e-5.
#include "backend/sampling.h"

#include <algorithm>

#include "backend/cuda/sampling_kernels.h"
#include "cuda_test_util.h"

namespace qed::testing {
namespace {

using SamplingKernel = CudaTest;

std::vector<SamplingParams> parameter_grid() {
  std::vector<SamplingParams> grid;
  auto add = [&](float temperature, int top_k, float top_p, float min_p, int logprobs) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.logprobs = logprobs;
    grid.push_back(p);
  };
  add(0.0f, 0, 1.0f, 0.0f, 5);      // greedy
  add(1.0f, 0, 1.0f, 0.0f, 0);      // plain sampling
  add(0.7f, 0, 1.0f, 0.0f, -1);     // temperature
  add(1.0f, 1, 1.0f, 0.0f, -1);     // top-k 1 = greedy
  add(1.0f, 50, 1.0f, 0.0f, 3);     // top-k
  add(1.0f, 0, 0.9f, 0.0f, -1);     // top-p
  add(1.0f, 0, 0.05f, 0.0f, -1);    // top-p keeping few
  add(1.0f, 0, 1.0f, 0.1f, -1);     // min-p
  add(0.6f, 20, 0.95f, 0.05f, 20);  // everything at once (the AIMO-style setting plus filters)
  add(1.3f, 1000, 0.8f, 0.0f, 1);
  return grid;
}

void check(int vocab, float logit_scale, bool with_ties, uint32_t rng_seed) {
  std::mt19937 rng(rng_seed);
  const std::vector<SamplingParams> grid = parameter_grid();
  const int draws_per_setting = 8;
  const int rows = int(grid.size()) * draws_per_setting;
  std::normal_distribution<float> dist(0.0f, logit_scale);
  std::vector<float> logits(size_t(rows) * vocab);
  for (float& x : logits) x = dist(rng);
  if (with_ties) {  // bf16-like coarse logits: many exact ties, which top-k/top-p must break as the CPU does
    for (float& x : logits) x = std::round(x * 4.0f) / 4.0f;
  }
  std::vector<cuda::SamplingRowParams> params(rows);
  std::vector<SampledToken> want(rows);
  for (int r = 0; r < rows; ++r) {
    const SamplingParams& p = grid[size_t(r / draws_per_setting)];
    const uint64_t seed = rng() * 0x9E3779B97F4A7C15ull + uint64_t(r);
    const uint64_t step = uint64_t(r % draws_per_setting) * 1000;
    params[r] = {r, p.temperature, p.top_p, p.min_p, p.top_k, p.logprobs, seed, step};
    want[r] = sample_token(std::span<const float>(logits.data() + size_t(r) * vocab, size_t(vocab)), p, seed, step, {});
  }
  auto d_logits = upload(logits);
  auto d_params = upload(params);
  cuda::DeviceBuffer work(logits.size() * sizeof(float));
  cuda::DeviceBuffer d_out(size_t(rows) * sizeof(cuda::SampledRow));
  cuda::sample_rows(d_logits.as<float>(), rows, vocab, d_params.as<cuda::SamplingRowParams>(), work.as<float>(),
                    d_out.as<cuda::SampledRow>(), nullptr);
  const std::vector<cuda::SampledRow> got = download<cuda::SampledRow>(d_out, size_t(rows));
  for (int r = 0; r < rows; ++r) {
    const SamplingParams& p = grid[size_t(r / draws_per_setting)];
    const std::string where = "vocab " + std::to_string(vocab) + " row " + std::to_string(r) +
                              " (T=" + std::to_string(p.temperature) + " k=" + std::to_string(p.top_k) +
                              " p=" + std::to_string(p.top_p) + " min_p=" + std::to_string(p.min_p) + ")";
    ASSERT_EQ(got[r].token, want[r].token) << where;
    if (p.logprobs < 0) continue;
    EXPECT_NEAR(got[r].logprob, want[r].logprob, 1e-5f) << where;
    ASSERT_EQ(size_t(std::min(p.logprobs, vocab)), want[r].top.size()) << where;
    for (size_t j = 0; j < want[r].top.size(); ++j) {
      EXPECT_EQ(got[r].top_tokens[j], want[r].top[j].token) << where << " top " << j;
      EXPECT_NEAR(got[r].top_logprobs[j], want[r].top[j].logprob, 1e-5f) << where << " top " << j;
    }
  }
}

TEST_F(SamplingKernel, SmallVocabularyMatchesCpuSampler) {
  check(1000, 2.0f, false, 31);
}

TEST_F(SamplingKernel, QwenVocabularyMatchesCpuSampler) {
  check(152064, 3.0f, false, 32);
}

TEST_F(SamplingKernel, TiedLogitsBreakTiesAsCpuSampler) {
  check(4096, 2.0f, true, 33);
}

TEST_F(SamplingKernel, TinyVocabularySmallerThanTheBlock) {
  check(7, 1.0f, false, 34);
}

TEST_F(SamplingKernel, SamplesSharingOneRowUseTheirOwnSeeds) {
  // n > 1 requests: every sample of the first token draws from the prompt's one logits row.
  std::mt19937 rng(35);
  const int vocab = 3000, samples = 12;
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& x : logits) x = dist(rng);
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_p = 0.95f;
  std::vector<cuda::SamplingRowParams> params(samples);
  std::vector<int32_t> want(samples);
  for (int i = 0; i < samples; ++i) {
    params[i] = {0, p.temperature, p.top_p, p.min_p, p.top_k, -1, uint64_t(1000 + i), 0};
    want[i] = sample_token(logits, p, uint64_t(1000 + i), 0, {}).token;
  }
  auto d_logits = upload(logits);
  auto d_params = upload(params);
  cuda::DeviceBuffer work(size_t(samples) * vocab * sizeof(float));
  cuda::DeviceBuffer d_out(size_t(samples) * sizeof(cuda::SampledRow));
  cuda::sample_rows(d_logits.as<float>(), samples, vocab, d_params.as<cuda::SamplingRowParams>(), work.as<float>(),
                    d_out.as<cuda::SampledRow>(), nullptr);
  const auto got = download<cuda::SampledRow>(d_out, size_t(samples));
  for (int i = 0; i < samples; ++i) EXPECT_EQ(got[i].token, want[i]) << "sample " << i;
}

}  // namespace
}  // namespace qed::testing
