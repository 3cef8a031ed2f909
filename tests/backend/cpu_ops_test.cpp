// Each reference op on inputs small enough to check by hand, and paged attention against a dense one.
#include "backend/cpu/cpu_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/thread_pool.h"

namespace qed::cpu {
namespace {

TEST(CpuOps, RmsnormScalesByRootMeanSquareThenWeight) {
  const float x[] = {1, 2, 3, 4};
  const float w[] = {1, 1, 2, 0.5f};
  float out[4];
  rmsnorm(x, w, out, 1, 4, 0.0f);
  const float s = 1.0f / std::sqrt(7.5f);
  EXPECT_FLOAT_EQ(out[0], 1 * s);
  EXPECT_FLOAT_EQ(out[1], 2 * s);
  EXPECT_FLOAT_EQ(out[2], 6 * s);
  EXPECT_FLOAT_EQ(out[3], 2 * s);
}

TEST(CpuOps, RmsnormEpsilonEntersUnderTheRoot) {
  const float x[] = {0, 0};
  const float w[] = {1, 1};
  float out[2] = {1, 1};
  rmsnorm(x, w, out, 1, 2, 1e-6f);
  EXPECT_EQ(out[0], 0.0f);  // not NaN: eps keeps the root positive
}

TEST(CpuOps, AddRmsnormUpdatesResidualAndNormalisesTheSum) {
  float residual[] = {1, 1, 0, 0};
  const float delta[] = {0, 1, 3, 4};
  const float w[] = {1, 1};
  float out[4];
  add_rmsnorm(residual, delta, w, out, 2, 2, 0.0f);
  EXPECT_EQ(residual[1], 2.0f);
  EXPECT_EQ(residual[3], 4.0f);
  EXPECT_FLOAT_EQ(out[0], 1.0f / std::sqrt(2.5f));
  EXPECT_FLOAT_EQ(out[2], 3.0f / std::sqrt(12.5f));
}

TEST(CpuOps, MatmulComputesXTimesWTransposedPlusBias) {
  const float x[] = {1, 2, 3, 4, 5, 6};      // 2 × 3
  const float w[] = {1, 0, -1, 2, 1, 0.5f};  // 2 × 3 (out × in)
  const float bias[] = {10, 20};
  float out[4];
  ThreadPool pool(2);
  matmul(x, w, bias, out, 2, 3, 2, &pool);
  EXPECT_EQ(out[0], 1 - 3 + 10.0f);
  EXPECT_EQ(out[1], 2 + 2 + 1.5f + 20);
  EXPECT_EQ(out[2], 4 - 6 + 10.0f);
  EXPECT_EQ(out[3], 8 + 5 + 3 + 20.0f);
  matmul(x, w, nullptr, out, 2, 3, 2, nullptr);
  EXPECT_EQ(out[3], 16.0f);
}

TEST(CpuOps, MatmulLongRowsMatchDoublePrecision) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  const int in = 1000, out_dim = 37;
  std::vector<float> x(in), w(size_t(in) * out_dim), out(out_dim);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = normal(rng);
  ThreadPool pool(2);
  matmul(x.data(), w.data(), nullptr, out.data(), 1, in, out_dim, &pool);
  for (int j = 0; j < out_dim; ++j) {
    double expected = 0;
    for (int k = 0; k < in; ++k) expected += double(x[size_t(k)]) * w[size_t(j) * in + size_t(k)];
    EXPECT_NEAR(out[size_t(j)], expected, 1e-4) << j;  // |sum| ~ 30, fp32 accumulation error ~ 1e-5
  }
}

TEST(CpuOps, SiluAndMulGatesTheUpHalf) {
  const float gate_up[] = {0, 1, -2, 3, 5, 7};  // one row, inter 3: gate {0, 1, -2}, up {3, 5, 7}
  float out[3];
  silu_and_mul(gate_up, out, 1, 3);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_FLOAT_EQ(out[1], 5.0f / (1.0f + std::exp(-1.0f)));
  EXPECT_FLOAT_EQ(out[2], 7.0f * -2.0f / (1.0f + std::exp(2.0f)));
}

TEST(CpuOps, EmbeddingGathersRows) {
  const float table[] = {0, 1, 10, 11, 20, 21};
  const int32_t ids[] = {2, 0, 2};
  float out[6];
  embedding(table, ids, out, 3, 2);
  EXPECT_EQ(std::vector<float>(out, out + 6), (std::vector<float>{20, 21, 0, 1, 20, 21}));
}

TEST(CpuOps, SoftmaxNormalisesAndGivesMaskedEntriesZero) {
  float x[] = {0.0f, std::log(2.0f), -INFINITY};
  softmax(x, 3);
  EXPECT_FLOAT_EQ(x[0], 1.0f / 3);
  EXPECT_FLOAT_EQ(x[1], 2.0f / 3);
  EXPECT_EQ(x[2], 0.0f);
}

TEST(CpuOps, DefaultRopeFrequenciesArePowersOfTheta) {
  float inv_freq[2];
  rope_inv_freq(4, 10000.0f, RopeScaling{}, inv_freq);
  EXPECT_EQ(inv_freq[0], 1.0f);
  EXPECT_FLOAT_EQ(inv_freq[1], 0.01f);
}

TEST(CpuOps, Llama3RopeKeepsHighDividesLowAndSmoothsMiddleFrequencies) {
  RopeScaling scaling;
  scaling.type = "llama3";
  scaling.factor = 8.0f;
  scaling.low_freq_factor = 1.0f;
  scaling.high_freq_factor = 4.0f;
  scaling.original_max_position_embeddings = 64;
  float plain[16], scaled[16];
  rope_inv_freq(32, 500000.0f, RopeScaling{}, plain);
  rope_inv_freq(32, 500000.0f, scaling, scaled);
  // Wavelength 2π/f: i = 0, 1 below 64/4 = 16 (kept); i = 2 between 16 and 64 (smoothed); i >= 3 above 64 (÷ 8).
  EXPECT_EQ(scaled[0], plain[0]);
  EXPECT_EQ(scaled[1], plain[1]);
  EXPECT_LT(scaled[2], plain[2]);
  EXPECT_GT(scaled[2], plain[2] / 8);
  for (int i = 3; i < 16; ++i) EXPECT_EQ(scaled[i], plain[i] / 8) << i;
}

TEST(CpuOps, RopeRotatesHalvesByPositionTimesFrequency) {
  const float inv_freq[] = {1.0f, 0.5f};
  float x[] = {1, 0, 0, 0, /* second row */ 1, 2, 3, 4};
  const int32_t positions[] = {1, 0};
  rope(x, positions, inv_freq, 2, 1, 4);
  EXPECT_FLOAT_EQ(x[0], std::cos(1.0f));
  EXPECT_FLOAT_EQ(x[2], std::sin(1.0f));
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_EQ(std::vector<float>(x + 4, x + 8), (std::vector<float>{1, 2, 3, 4}));  // position 0: identity
}

TEST(CpuOps, WriteKvPlacesSlotsInTheirBlocks) {
  const int block_size = 2, kv_heads = 1, head_dim = 2, num_blocks = 3;
  std::vector<float> k(size_t(num_blocks * block_size * kv_heads * head_dim), -1), v = k;
  PagedKv cache{k.data(), v.data(), block_size, kv_heads, head_dim};
  const int32_t table[] = {2, 0};
  const float rows_k[] = {1, 1, 2, 2, 3, 3};
  const float rows_v[] = {4, 4, 5, 5, 6, 6};
  write_kv(cache, table, 1, rows_k, rows_v, 3);  // slots 1, 2, 3 → block 2 offset 1, block 0 offsets 0 and 1
  EXPECT_EQ(k[size_t(2 * 4 + 2)], 1.0f);
  EXPECT_EQ(k[0], 2.0f);
  EXPECT_EQ(k[2], 3.0f);
  EXPECT_EQ(v[2], 6.0f);
  EXPECT_EQ(k[size_t(2 * 4)], -1.0f);  // slot 0 untouched
}

// Dense attention in double, straight from the definition, for the paged op to match.
std::vector<float> dense_attention(const std::vector<float>& q, const std::vector<float>& keys,
                                   const std::vector<float>& values, int total, int n, int heads, int kv_heads,
                                   int head_dim, const std::vector<uint8_t>& mask) {
  const int num_cached = total - n;
  std::vector<float> out(size_t(n * heads * head_dim));
  for (int i = 0; i < n; ++i) {
    for (int h = 0; h < heads; ++h) {
      const int kh = h / (heads / kv_heads);
      std::vector<double> p(size_t(total), 0.0);
      double max = -1e300, sum = 0;
      for (int s = 0; s < total; ++s) {
        int j = s - num_cached;
        if (j >= 0 && !(mask.empty() ? j <= i : mask[size_t(i * n + j)])) continue;
        double dot = 0;
        for (int d = 0; d < head_dim; ++d) {
          dot += double(q[size_t((i * heads + h) * head_dim + d)]) * keys[size_t((s * kv_heads + kh) * head_dim + d)];
        }
        p[size_t(s)] = dot / std::sqrt(double(head_dim));
        max = std::max(max, p[size_t(s)]);
      }
      for (int s = 0; s < total; ++s) {
        int j = s - num_cached;
        bool visible = j < 0 || (mask.empty() ? j <= i : mask[size_t(i * n + j)]);
        p[size_t(s)] = visible ? std::exp(p[size_t(s)] - max) : 0.0;
        sum += p[size_t(s)];
      }
      for (int d = 0; d < head_dim; ++d) {
        double acc = 0;
        for (int s = 0; s < total; ++s) acc += p[size_t(s)] / sum * values[size_t((s * kv_heads + kh) * head_dim + d)];
        out[size_t((i * heads + h) * head_dim + d)] = float(acc);
      }
    }
  }
  return out;
}

void check_paged_attention(int n, int num_cached, bool custom_mask) {
  const int heads = 4, kv_heads = 2, head_dim = 8, block_size = 4, num_blocks = 16;
  const int total = num_cached + n;
  std::mt19937 rng(uint32_t(n * 100 + num_cached));
  std::normal_distribution<float> normal;
  std::vector<float> q(size_t(n * heads * head_dim)), keys(size_t(total * kv_heads * head_dim)), values(keys.size());
  for (float& x : q) x = normal(rng);
  for (float& x : keys) x = normal(rng);
  for (float& x : values) x = normal(rng);
  std::vector<uint8_t> mask;
  if (custom_mask) {
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) mask.push_back(uint8_t(j == i || (j < i && (i + j) % 3 == 0)));
  }
  std::vector<float> k_cache(size_t(num_blocks * block_size * kv_heads * head_dim), NAN), v_cache = k_cache;
  PagedKv cache{k_cache.data(), v_cache.data(), block_size, kv_heads, head_dim};
  std::vector<int32_t> table = {9, 2, 14, 5, 0, 11, 7};
  write_kv(cache, table.data(), 0, keys.data(), values.data(), total);
  std::vector<float> out(q.size());
  ThreadPool pool(2);
  attention(q.data(), cache, table.data(), num_cached, n, heads, mask.empty() ? nullptr : mask.data(),
            1.0f / std::sqrt(float(head_dim)), out.data(), &pool);
  const std::vector<float> expected = dense_attention(q, keys, values, total, n, heads, kv_heads, head_dim, mask);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], expected[i], 1e-5f) << i;
}

TEST(CpuOps, PagedAttentionCausalPrefillMatchesDense) {
  check_paged_attention(11, 0, false);
}
TEST(CpuOps, PagedAttentionWithCachedPrefixMatchesDense) {
  check_paged_attention(5, 13, false);
}
TEST(CpuOps, PagedAttentionDecodeMatchesDense) {
  check_paged_attention(1, 22, false);
}
TEST(CpuOps, PagedAttentionCustomMaskMatchesDense) {
  check_paged_attention(9, 6, true);
}

}  // namespace
}  // namespace qed::cpu
