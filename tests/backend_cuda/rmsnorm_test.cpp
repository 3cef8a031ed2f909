// CUDA RMSNorm (+ fused residual add) vs a plain CPU reference of HF's Qwen2RMSNorm on random bf16 inputs.
// Tolerance: the kernel and the reference round at the same points (bf16 sum, bf16 normalized value, bf16 output);
// only the fp32 reduction order differs. That can flip the rounding of the bf16 normalized value by one ulp, which
// the weight multiply and the final rounding carry into at most two ulps of the output (relative 2^-6 at worst,
// seen on H100: 1 ulp = 0.0078 at 1.22). Flips are rare, so at most 1% of elements may differ at all: a systematic
// error (wrong eps, a missed element of the sum) changes most of them.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/device.h"
#include "backend/cuda/norm_kernels.h"
#include "core/dtype.h"

namespace qed {
namespace {

std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = float_to_bf16(dist(rng));
  return v;
}

void reference_rmsnorm(const std::vector<uint16_t>& x, std::vector<uint16_t>* residual, const std::vector<uint16_t>& w,
                       std::vector<uint16_t>& y, int rows, int dim, float eps) {
  for (int r = 0; r < rows; ++r) {
    std::vector<float> h(dim);
    for (int i = 0; i < dim; ++i) {
      float v = bf16_to_float(x[r * dim + i]);
      if (residual) {
        uint16_t sum = float_to_bf16(v + bf16_to_float((*residual)[r * dim + i]));
        (*residual)[r * dim + i] = sum;
        v = bf16_to_float(sum);
      }
      h[i] = v;
    }
    double sum_sq = 0;
    for (float v : h) sum_sq += double(v) * v;
    float inv_rms = 1.0f / std::sqrt(float(sum_sq / dim) + eps);
    for (int i = 0; i < dim; ++i) {
      float normed = bf16_to_float(float_to_bf16(h[i] * inv_rms));
      y[r * dim + i] = float_to_bf16(normed * bf16_to_float(w[i]));
    }
  }
}

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CudaTest, RmsNormWithAndWithoutResidualMatchesReference) {
  std::mt19937 rng(1234);
  // 40 .. 8192: one vector per thread (8192: 1024 threads); 8200: the two-pass kernel; 5121: the scalar one.
  for (int dim : {40, 64, 896, 5120, 8192, 8200, 5121}) {
    for (bool with_residual : {false, true}) {
      const int rows = dim == 5120 ? 1 : 7;
      auto x = random_bf16(size_t(rows) * dim, rng, 1.5f);
      auto residual = random_bf16(size_t(rows) * dim, rng, 0.7f);
      auto w = random_bf16(dim, rng, 0.3f);
      for (auto& v : w) v = float_to_bf16(1.0f + bf16_to_float(v));
      std::vector<uint16_t> want(x.size()), got(x.size(), 0xFFFF), got_residual(x.size());
      std::vector<uint16_t> ref_residual = residual;
      reference_rmsnorm(x, with_residual ? &ref_residual : nullptr, w, want, rows, dim, 1e-6f);

      cuda::DeviceBuffer dx(x.size() * 2), dr(x.size() * 2), dw(w.size() * 2), dy(x.size() * 2);
      dx.upload(x.data(), x.size() * 2);
      dr.upload(residual.data(), residual.size() * 2);
      dw.upload(w.data(), w.size() * 2);
      dy.upload(got.data(), got.size() * 2);  // poisoned with NaNs: every element must be written
      cuda::rmsnorm_bf16(dx.as<uint16_t>(), with_residual ? dr.as<uint16_t>() : nullptr, dw.as<uint16_t>(),
                         dy.as<uint16_t>(), rows, dim, 1e-6f, nullptr);
      dy.download(got.data(), got.size() * 2);
      dr.download(got_residual.data(), got_residual.size() * 2);

      size_t differing = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        float a = bf16_to_float(got[i]), b = bf16_to_float(want[i]);
        ASSERT_FALSE(std::isnan(a)) << "unwritten or NaN at " << i << " dim=" << dim;
        ASSERT_LE(std::fabs(a - b), 0.0157f * std::fabs(b) + 1e-6f) << "i=" << i << " dim=" << dim;
        differing += got[i] != want[i];
        if (with_residual) {
          ASSERT_EQ(got_residual[i], ref_residual[i]) << "residual i=" << i;
        }
      }
      EXPECT_LE(differing, want.size() / 100) << "dim=" << dim << " residual=" << with_residual;
    }
  }
}

}  // namespace
}  // namespace qed
