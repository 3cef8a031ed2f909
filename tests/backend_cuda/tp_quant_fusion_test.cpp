// Tensor parallelism and the fused quantized layers of the CUDA backend (quant_fusion.h): a rank fuses its own
// slices of q/k/v (or gate/up), so its fused codes and scales must be exactly the rows of the unsharded fused layer
// that it holds. True because per-tensor scales are replicated (every rank requantizes to the same largest scale)
// and per-channel scales travel with their rows; this test is what backend/tp/shard_plan.h's claim rests on.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backend/cpu/quant_ops.h"
#include "backend/cuda/quant_fusion.h"

namespace qed::cuda {
namespace {

constexpr int kCols = 32;

struct Part {
  std::vector<uint8_t> codes;  // rows × kCols
  int rows = 0;
  std::vector<float> scales;
};

Part random_part(int rows, std::vector<float> scales, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Part p;
  p.rows = rows;
  p.scales = std::move(scales);
  p.codes.resize(size_t(rows) * kCols);
  for (int r = 0; r < rows; ++r) {
    const float s = p.scales.size() == 1 ? p.scales[0] : p.scales[size_t(r)];
    for (int c = 0; c < kCols; ++c) p.codes[size_t(r) * kCols + c] = cpu::quantize_fp8(dist(rng) * 100.0f * s, s);
  }
  return p;
}

// Rows [begin, begin + count) of a part, with its scales sliced (per channel) or kept (per tensor).
QuantPart slice(const Part& p, int begin, int count) {
  std::vector<float> scales =
      p.scales.size() == 1 ? p.scales : std::vector<float>(p.scales.begin() + begin, p.scales.begin() + begin + count);
  return {p.codes.data() + size_t(begin) * kCols, count, scales};
}

void expect_ranks_hold_rows_of_the_fused_layer(const std::vector<Part>& parts, int ranks) {
  std::vector<QuantPart> whole;
  for (const Part& p : parts) whole.push_back({p.codes.data(), p.rows, p.scales});
  const FusedFp8 full = fuse_fp8_parts(whole, kCols);
  for (int r = 0; r < ranks; ++r) {
    std::vector<QuantPart> mine;
    std::vector<uint8_t> want_codes;
    std::vector<float> want_scales;
    int part_start = 0;  // first row of the part in the fused matrix
    for (const Part& p : parts) {
      const int count = p.rows / ranks, begin = r * count;
      mine.push_back(slice(p, begin, count));
      const size_t from = size_t(part_start + begin) * kCols;
      want_codes.insert(want_codes.end(), full.codes.begin() + long(from),
                        full.codes.begin() + long(from + size_t(count) * kCols));
      if (full.per_channel) {
        want_scales.insert(want_scales.end(), full.scales.begin() + part_start + begin,
                           full.scales.begin() + part_start + begin + count);
      }
      part_start += p.rows;
    }
    if (!full.per_channel) want_scales = full.scales;
    const FusedFp8 got = fuse_fp8_parts(mine, kCols);
    EXPECT_EQ(got.per_channel, full.per_channel) << "rank " << r;
    EXPECT_EQ(got.codes, want_codes) << "rank " << r;
    EXPECT_EQ(got.scales, want_scales) << "rank " << r;
  }
}

TEST(TpQuantFusion, PerTensorScalesRequantizedToTheSameMaxOnEveryRank) {
  std::mt19937 rng(7);
  // q, k, v with three different per-tensor scales: every part but v is requantized to v's (the largest).
  const std::vector<Part> qkv = {random_part(64, {0.25f}, rng), random_part(16, {0.5f}, rng),
                                 random_part(16, {1.5f}, rng)};
  for (int ranks : {1, 2, 4}) expect_ranks_hold_rows_of_the_fused_layer(qkv, ranks);
}

TEST(TpQuantFusion, MixedPerChannelAndPerTensorScalesFollowTheirRows) {
  std::mt19937 rng(11);
  std::vector<float> channel(32);
  for (size_t i = 0; i < channel.size(); ++i) channel[i] = 0.1f + 0.05f * float(i % 7);
  const std::vector<Part> gate_up = {random_part(32, channel, rng), random_part(32, {0.75f}, rng)};
  for (int ranks : {1, 2, 4}) expect_ranks_hold_rows_of_the_fused_layer(gate_up, ranks);
}

TEST(TpQuantFusion, Int8ChannelScalesOfARankAreItsRowsOfTheFusedScales) {
  std::mt19937 rng(13);
  std::vector<float> k(16), v(16);
  for (size_t i = 0; i < 16; ++i) {
    k[i] = 0.01f * float(i + 1);
    v[i] = 0.02f * float(i + 3);
  }
  const Part pk = random_part(16, k, rng), pv = random_part(16, v, rng);
  const std::vector<float> full = fuse_channel_scales({{pk.codes.data(), 16, k}, {pv.codes.data(), 16, v}});
  for (int r = 0; r < 2; ++r) {
    const std::vector<float> got = fuse_channel_scales({slice(pk, 8 * r, 8), slice(pv, 8 * r, 8)});
    std::vector<float> want(full.begin() + 8 * r, full.begin() + 8 * r + 8);
    want.insert(want.end(), full.begin() + 16 + 8 * r, full.begin() + 16 + 8 * r + 8);
    EXPECT_EQ(got, want) << "rank " << r;
  }
}

}  // namespace
}  // namespace qed::cuda
