// The quantized reference ops against independent definitions: core/dtype.h's exhaustive-search E4M3 rounding
// (the OCP FP8 spec's value set), plain double arithmetic for the GEMMs, and the error bounds the formats promise.
#include "backend/cpu/quant_ops.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"

namespace qed::cpu {
namespace {

TEST(QuantOps, Fp8RoundingMatchesExhaustiveSearchOnMillionsOfFloats) {
  // Every 997th fp32 bit pattern covers all exponents (and NaN/inf); the E4M3 neighbourhood is also swept densely,
  // including the exact midpoints between codes, where ties-to-even decides.
  for (uint64_t bits = 0; bits <= 0xFFFFFFFFull; bits += 997) {
    const float x = std::bit_cast<float>(uint32_t(bits));
    ASSERT_EQ(quantize_fp8(x, 1.0f), float_to_f8e4m3(x)) << x;
  }
  for (int code = 0; code < 0x7E; ++code) {
    const float lo = f8e4m3_to_float(uint8_t(code)), hi = f8e4m3_to_float(uint8_t(code + 1));
    for (float t : {0.25f, 0.5f, 0.75f}) {
      for (float sign : {1.0f, -1.0f}) {
        const float x = sign * (lo + (hi - lo) * t);
        ASSERT_EQ(quantize_fp8(x, 1.0f), float_to_f8e4m3(x)) << x;
      }
    }
  }
}

TEST(QuantOps, Fp8RepresentableValuesRoundTripExactly) {
  for (int code = 0; code < 256; ++code) {
    const float v = f8e4m3_to_float(uint8_t(code));
    if (std::isnan(v)) continue;
    for (float scale : {1.0f, 0.125f, 3.0f / 448.0f}) {
      float out = 0.0f;
      fake_quantize_fp8(std::vector<float>{v * scale}.data(), 1, scale, &out);
      EXPECT_EQ(out, v * scale) << "code " << code << " scale " << scale;
    }
  }
}

TEST(QuantOps, Fp8RelativeErrorIsAtMostHalfUlpInNormalRange) {
  // E4M3 has 3 mantissa bits: round-to-nearest errs by at most 2^-4 relative in the normal range [2^-6, 448].
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> log2mag(-6.0f, std::log2(448.0f));
  for (int i = 0; i < 200000; ++i) {
    const float x = std::exp2(log2mag(rng)) * (i % 2 ? 1.0f : -1.0f);
    float out = 0.0f;
    fake_quantize_fp8(&x, 1, 1.0f, &out);
    ASSERT_LE(std::fabs(out - x), std::ldexp(std::fabs(x), -4)) << x;
  }
}

TEST(QuantOps, Fp8SaturatesAt448AndKeepsNaN) {
  for (float x : {448.0f, 449.0f, 500.0f, 1e30f, std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(quantize_fp8(x, 1.0f), 0x7E) << x;
    EXPECT_EQ(quantize_fp8(-x, 1.0f), 0xFE) << x;
  }
  EXPECT_EQ(quantize_fp8(900.0f, 2.0f), 0x7E);  // the scale divides first: 450 saturates
}

TEST(QuantOps, Fp8ZeroAndNaNHandling) {
  EXPECT_EQ(quantize_fp8(0.0f, 1.0f), 0x00);
  EXPECT_EQ(quantize_fp8(-0.0f, 1.0f), 0x80);
  EXPECT_EQ(quantize_fp8(std::nanf(""), 1.0f), 0x7F);
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(quantize_fp8(std::nanf(""), 0.5f))));
  // Below half the smallest subnormal (2^-10) rounds to zero; an all-zero tensor's scale is 1, not 0 or inf.
  EXPECT_EQ(quantize_fp8(0x1p-11f, 1.0f), 0x00);
  EXPECT_EQ(fp8_scale_for_amax(0.0f), 1.0f);
  EXPECT_TRUE(std::isnan(amax(std::vector<float>{1.0f, std::nanf(""), 2.0f}.data(), 3)));
}

TEST(QuantOps, Fp8ScaleMapsAmaxOntoTheLargestCode) {
  const std::vector<float> x = {-3.5f, 0.25f, 7.0f, -1e-3f};
  const float scale = fp8_scale_for_amax(amax(x.data(), x.size()));
  EXPECT_FLOAT_EQ(scale, 7.0f / 448.0f);
  std::vector<uint8_t> q(x.size());
  quantize_fp8_per_tensor(x.data(), x.size(), scale, q.data());
  EXPECT_EQ(q[2], 0x7E);
  std::vector<float> back(x.size());
  dequantize_fp8_per_tensor(q.data(), q.size(), scale, back.data());
  EXPECT_FLOAT_EQ(back[2], 7.0f);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_LE(std::fabs(back[i] - x[i]), std::fabs(x[i]) / 16 + scale * 0x1p-9f);
}

TEST(QuantOps, Fp8PerChannelUsesEachRowsScale) {
  const std::vector<float> w = {1.0f, -2.0f, 100.0f, 50.0f};  // 2 × 2
  const std::vector<float> scales = {2.0f / 448.0f, 100.0f / 448.0f};
  std::vector<uint8_t> q(4);
  quantize_fp8_per_channel(w.data(), 2, 2, scales.data(), q.data());
  EXPECT_EQ(q[1], 0xFE);  // -2 is row 0's amax
  EXPECT_EQ(q[2], 0x7E);  // 100 is row 1's amax
  std::vector<float> back(4);
  dequantize_fp8_per_channel(q.data(), 2, 2, scales.data(), back.data());
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(back[i], w[i], std::fabs(w[i]) / 16);
}

TEST(QuantOps, Int8RoundsHalfToEvenAndClamps) {
  EXPECT_EQ(quantize_int8(2.5f, 1.0f), 2);
  EXPECT_EQ(quantize_int8(3.5f, 1.0f), 4);
  EXPECT_EQ(quantize_int8(-2.5f, 1.0f), -2);
  EXPECT_EQ(quantize_int8(0.49f, 1.0f), 0);
  EXPECT_EQ(quantize_int8(200.0f, 1.0f), 127);
  EXPECT_EQ(quantize_int8(-200.0f, 1.0f), -127);  // symmetric: -128 is never produced
  EXPECT_EQ(quantize_int8(std::nanf(""), 1.0f), 0);
}

TEST(QuantOps, Int8PerChannelErrorIsAtMostHalfAStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int rows = 16, cols = 64;
  std::vector<float> w(size_t(rows) * cols);
  for (float& v : w) v = normal(rng);
  w[5] = 0.0f;
  std::vector<float> scales(rows), back(w.size());
  std::vector<int8_t> q(w.size());
  quantize_int8_per_channel(w.data(), rows, cols, scales.data(), q.data());
  dequantize_int8_per_channel(q.data(), rows, cols, scales.data(), back.data());
  for (int r = 0; r < rows; ++r) {
    EXPECT_FLOAT_EQ(scales[r], amax(w.data() + size_t(r) * cols, size_t(cols)) / 127.0f);
    for (int c = 0; c < cols; ++c) {
      const size_t i = size_t(r) * cols + c;
      ASSERT_LE(std::fabs(back[i] - w[i]), scales[r] * 0.5f * (1 + 1e-6f));
    }
  }
  EXPECT_EQ(back[5], 0.0f);
}

// Double-precision sum of the dequantized operands: the value any exact FP8 GEMM approximates.
TEST(QuantOps, Fp8GemmEqualsScaledProductOfDequantizedOperands) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> code(0, 0xFD);
  const int rows = 3, in = 40, out_dim = 5;
  std::vector<uint8_t> xq(size_t(rows) * in), wq(size_t(out_dim) * in);
  for (auto& c : xq) c = uint8_t(code(rng) & 0xF7);  // keep away from the NaN codes
  for (auto& c : wq) c = uint8_t(code(rng) & 0xF7);
  const float sx = 0.01f;
  const std::vector<float> sw = {0.002f, 0.003f, 0.004f, 0.005f, 0.006f};
  const std::vector<float> bias = {1, 2, 3, 4, 5};
  for (bool per_channel : {false, true}) {
    std::vector<float> out(size_t(rows) * out_dim);
    fp8_gemm(xq.data(), sx, wq.data(), sw.data(), per_channel, bias.data(), out.data(), rows, in, out_dim);
    for (int r = 0; r < rows; ++r) {
      for (int j = 0; j < out_dim; ++j) {
        double sum = 0, magnitude = 0;
        for (int k = 0; k < in; ++k) {
          double p = double(f8e4m3_to_float(xq[size_t(r) * in + k])) * f8e4m3_to_float(wq[size_t(j) * in + k]);
          sum += p;
          magnitude += std::fabs(p);
        }
        const double s = double(sx) * (per_channel ? sw[size_t(j)] : sw[0]);
        const double expected = sum * s + bias[size_t(j)];
        // fp32 accumulation of `in` exact products: error ≤ in · 2^-24 · Σ|p| (plus the scale's rounding).
        ASSERT_NEAR(out[size_t(r) * out_dim + j], expected, (in * 0x1p-24 * magnitude + 1e-6) * s + 1e-6)
            << r << "," << j;
      }
    }
  }
}

TEST(QuantOps, Int8WeightOnlyGemmEqualsDequantizedMatmul) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int rows = 2, in = 33, out_dim = 4;
  std::vector<float> x(size_t(rows) * in), w(size_t(out_dim) * in);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = normal(rng) * 0.05f;
  std::vector<int8_t> q(w.size());
  std::vector<float> scales(out_dim), out(size_t(rows) * out_dim);
  quantize_int8_per_channel(w.data(), out_dim, in, scales.data(), q.data());
  int8_wo_gemm(x.data(), q.data(), scales.data(), nullptr, out.data(), rows, in, out_dim);
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < out_dim; ++j) {
      double exact_q = 0, exact_w = 0, magnitude = 0;
      for (int k = 0; k < in; ++k) {
        exact_q += double(x[size_t(r) * in + k]) * q[size_t(j) * in + k] * scales[size_t(j)];
        exact_w += double(x[size_t(r) * in + k]) * w[size_t(j) * in + k];
        magnitude += std::fabs(x[size_t(r) * in + k]);
      }
      const float got = out[size_t(r) * out_dim + j];
      EXPECT_NEAR(got, exact_q, 1e-5 * (1 + std::fabs(exact_q)));
      // Against the unquantized weights: each weight errs by ≤ scale/2.
      EXPECT_LE(std::fabs(got - exact_w), magnitude * scales[size_t(j)] * 0.5 + 1e-5);
    }
  }
}

}  // namespace
}  // namespace qed::cpu
