// The calibration amax kernel (accumulate_amax_bf16) and its recorder (cuda::ActivationAmax) against a host max
// over the same bf16 values. A max of bf16 values is exact in any order, so the result must be bit-equal.
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>

#include "backend/cuda/activation_amax.h"
#include "backend/cuda/amax_kernels.h"
#include "cuda_test_util.h"

namespace qed::testing {
namespace {

using AmaxKernel = CudaTest;

float host_amax(const std::vector<float>& m, int rows, int cols, int stride) {
  float best = 0.0f;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) best = std::max(best, std::fabs(m[size_t(r) * stride + size_t(c)]));
  }
  return best;
}

float device_amax(const std::vector<float>& m, int rows, int cols, int stride, uint32_t start_bits = 0) {
  auto d_m = upload(to_bf16(m));
  auto d_slot = upload(std::vector<uint32_t>{start_bits});
  cuda::accumulate_amax_bf16(d_m.as<uint16_t>(), rows, cols, stride, d_slot.as<uint32_t>(), nullptr);
  const uint32_t bits = download<uint32_t>(d_slot, 1)[0];
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

TEST_F(AmaxKernel, EqualsTheHostMaxOverStridedRowsExactly) {
  std::mt19937 rng(11);
  // (rows, cols, stride): one row, more rows than blocks (1024), a strided K/V-like view, odd widths.
  for (auto [rows, cols, stride] : {std::tuple{1, 896, 896}, std::tuple{3000, 64, 64}, std::tuple{37, 128, 640},
                                    std::tuple{5, 13, 29}, std::tuple{300, 5120, 5120}}) {
    std::vector<float> m = random_bf16_values(size_t(rows) * stride, rng, 3.0f);
    // The largest magnitude is negative and sits in the last row: the sign is dropped, no row is skipped.
    m[size_t(rows - 1) * stride + size_t(cols - 1)] = -1000.0f;
    // Values outside the view (stride padding) are larger still and must not count.
    if (stride > cols) m[size_t(cols)] = 5000.0f;
    const float want = host_amax(m, rows, cols, stride);
    EXPECT_EQ(want, 1000.0f);
    EXPECT_EQ(device_amax(m, rows, cols, stride), want) << rows << "x" << cols << " stride " << stride;
  }
}

TEST_F(AmaxKernel, AccumulatesIntoTheSlotAndKeepsALargerPreviousMax) {
  std::mt19937 rng(3);
  const std::vector<float> m = random_bf16_values(64 * 64, rng, 1.0f);
  const float here = host_amax(m, 64, 64, 64);
  uint32_t big;
  const float previous = 100.0f;
  std::memcpy(&big, &previous, sizeof(big));
  EXPECT_EQ(device_amax(m, 64, 64, 64, big), 100.0f);
  EXPECT_EQ(device_amax(m, 64, 64, 64, 0), here);
}

TEST_F(AmaxKernel, ANanOrInfinityReachesTheHost) {
  std::vector<float> m(32 * 16, 0.5f);
  m[100] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(device_amax(m, 32, 16, 16)));
  m[200] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(device_amax(m, 32, 16, 16)));
  EXPECT_EQ(device_amax(std::vector<float>(16, 0.0f), 1, 16, 16), 0.0f);  // all zeros: 0, not garbage
}

TEST_F(AmaxKernel, RecorderKeepsLayersAndSitesApart) {
  cuda::ActivationAmax recorder(3);
  std::vector<float> m(8 * 8, 0.0f);
  for (int layer = 0; layer < 3; ++layer) {
    for (int site = 0; site < cuda::kAmaxSites; ++site) {
      m[size_t(layer * 7 + site) % m.size()] = float(1 + layer * cuda::kAmaxSites + site);
      auto d_m = upload(to_bf16(m));
      recorder.record(layer, cuda::AmaxSite(site), d_m.as<uint16_t>(), 8, 8, 8, nullptr);
      m.assign(m.size(), 0.0f);
    }
  }
  const auto amax = recorder.read();
  ASSERT_EQ(amax.size(), 3u);
  for (int layer = 0; layer < 3; ++layer) {
    for (int site = 0; site < cuda::kAmaxSites; ++site)
      EXPECT_EQ(amax[size_t(layer)][size_t(site)], float(1 + layer * cuda::kAmaxSites + site)) << layer << "/" << site;
  }
}

}  // namespace
}  // namespace qed::testing
