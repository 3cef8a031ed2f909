// Host-side preparation of fused quantized layers (quant_fusion.h): vLLM's requantize-to-max-scale for per-tensor
// FP8 parts with different scales, per-channel broadcast, and the checks on scale values.
#include "backend/cuda/quant_fusion.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backend/cpu/quant_ops.h"
#include "core/dtype.h"
#include "core/error.h"

namespace qed::cuda {
namespace {

std::vector<uint8_t> fp8_codes(const std::vector<float>& values, float scale) {
  std::vector<uint8_t> codes(values.size());
  cpu::quantize_fp8_per_tensor(values.data(), values.size(), scale, codes.data());
  return codes;
}

TEST(QuantFusion, EqualPerTensorScalesStayOnePerTensorScaleWithCodesUnchanged) {
  const std::vector<uint8_t> a = {0x38, 0x30, 0xB8, 0x01}, b = {0x7E, 0x00, 0x80, 0x40};
  const FusedFp8 fused = fuse_fp8_parts({{a.data(), 2, {0.5f}}, {b.data(), 2, {0.5f}}}, 2);
  EXPECT_FALSE(fused.per_channel);
  EXPECT_EQ(fused.scales, std::vector<float>{0.5f});
  EXPECT_EQ(fused.codes, (std::vector<uint8_t>{0x38, 0x30, 0xB8, 0x01, 0x7E, 0x00, 0x80, 0x40}));
}

TEST(QuantFusion, DifferentPerTensorScalesAreRequantizedToTheLargest) {
  // Code 0x38 is 1.0: at scale 0.5 it means 0.5, which at scale 1.0 is code 0x30; 0xB8 (-1.0) becomes 0xB0.
  // 0x40 (2.0 → 1.0 at scale 1) becomes 0x38. The part that already has the largest scale keeps its codes.
  const std::vector<uint8_t> small = {0x38, 0xB8, 0x40, 0x00}, large = {0x38, 0x21, 0x7E, 0x80};
  const FusedFp8 fused = fuse_fp8_parts({{small.data(), 1, {0.5f}}, {large.data(), 1, {1.0f}}}, 4);
  EXPECT_FALSE(fused.per_channel);
  EXPECT_EQ(fused.scales, std::vector<float>{1.0f});
  EXPECT_EQ(fused.codes, (std::vector<uint8_t>{0x30, 0xB0, 0x38, 0x00, 0x38, 0x21, 0x7E, 0x80}));
}

TEST(QuantFusion, RequantizedValuesStayWithinOneE4m3RoundingOfTheOriginals) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> q(4096), k(1024), v(1024);
  for (auto* part : {&q, &k, &v}) {
    for (float& x : *part) x = dist(rng);
  }
  const float sq = 0.004f, sk = 0.011f, sv = 0.007f;  // k's is the largest
  const std::vector<uint8_t> cq = fp8_codes(q, sq), ck = fp8_codes(k, sk), cv = fp8_codes(v, sv);
  const FusedFp8 fused = fuse_fp8_parts({{cq.data(), 4, {sq}}, {ck.data(), 1, {sk}}, {cv.data(), 1, {sv}}}, 1024);
  ASSERT_EQ(fused.scales, std::vector<float>{sk});
  ASSERT_EQ(fused.codes.size(), cq.size() + ck.size() + cv.size());
  // The k part is untouched; every other value moves by at most half an E4M3 step at the new scale (2^-4
  // relative for normals, half of 2^-9 · scale for subnormals) from what its old code meant.
  EXPECT_TRUE(std::equal(ck.begin(), ck.end(), fused.codes.begin() + long(cq.size())));
  auto check = [&](const std::vector<uint8_t>& old_codes, float old_scale, size_t at) {
    for (size_t i = 0; i < old_codes.size(); ++i) {
      const float before = f8e4m3_to_float(old_codes[i]) * old_scale;
      const float after = f8e4m3_to_float(fused.codes[at + i]) * sk;
      ASSERT_LE(std::fabs(after - before), std::fabs(before) / 16.0f + 0x1p-10f * sk) << i;
    }
  };
  check(cq, sq, 0);
  check(cv, sv, cq.size() + ck.size());
}

TEST(QuantFusion, AnyPerChannelPartMakesThePerChannelScalesOfAllRows) {
  const std::vector<uint8_t> a = {1, 2, 3, 4}, b = {5, 6, 7, 8, 9, 10};
  const FusedFp8 fused = fuse_fp8_parts({{a.data(), 2, {0.25f}}, {b.data(), 3, {1.0f, 2.0f, 3.0f}}}, 2);
  EXPECT_TRUE(fused.per_channel);
  EXPECT_EQ(fused.scales, (std::vector<float>{0.25f, 0.25f, 1.0f, 2.0f, 3.0f}));
  EXPECT_EQ(fused.codes, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(fuse_channel_scales({{a.data(), 2, {0.25f}}, {b.data(), 3, {1.0f, 2.0f, 3.0f}}}),
            (std::vector<float>{0.25f, 0.25f, 1.0f, 2.0f, 3.0f}));
}

TEST(QuantFusion, ScaleCountsThatMatchNeitherConventionAreErrors) {
  const std::vector<uint8_t> a = {1, 2, 3, 4};
  EXPECT_THROW(fuse_fp8_parts({{a.data(), 2, {1.0f, 2.0f, 3.0f}}}, 2), Error);
  EXPECT_THROW(fuse_channel_scales({{a.data(), 2, {}}}), Error);
}

}  // namespace
}  // namespace qed::cuda
