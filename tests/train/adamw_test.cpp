// AdamW, the cosine schedule and gradient clipping against torch.optim.AdamW / transformers'
// get_cosine_schedule_with_warmup / clip_grad_norm_, written out here in double precision.
#include "train/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

namespace qed::train {
namespace {

TEST(CosineSchedule, LinearWarmupFromZeroThenHalfCosineToZero) {
  EXPECT_EQ(warmup_steps(0.1, 95), 10);  // ceil(9.5), as transformers' get_warmup_steps
  EXPECT_EQ(warmup_steps(0.0, 95), 0);
  EXPECT_DOUBLE_EQ(cosine_lr(1e-3, 0, 10, 100), 0.0);  // the first optimizer step runs at lambda(0)
  EXPECT_DOUBLE_EQ(cosine_lr(1e-3, 5, 10, 100), 5e-4);
  EXPECT_DOUBLE_EQ(cosine_lr(1e-3, 10, 10, 100), 1e-3);
  EXPECT_NEAR(cosine_lr(1e-3, 55, 10, 100), 5e-4, 1e-15);
  EXPECT_NEAR(cosine_lr(1e-3, 40, 10, 100), 1e-3 * 0.5 * (1 + std::cos(std::numbers::pi / 3)), 1e-15);
  EXPECT_NEAR(cosine_lr(1e-3, 100, 10, 100), 0.0, 1e-18);
  EXPECT_DOUBLE_EQ(cosine_lr(2e-3, 0, 0, 4), 2e-3);  // no warmup: the peak at once
}

TEST(AdamW, TwoStepsMatchTorchsUpdateWithDecoupledDecayOnWeightsOnly) {
  const double lr = 0.1, wd = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  AdamW adam(AdamWConfig{.weight_decay = wd}, {2, 1}, {true, false});
  std::vector<float> w = {1.0f, -2.0f}, b = {0.5f};
  const std::vector<std::vector<float>> grads_w = {{0.5f, 0.1f}, {-0.25f, 0.3f}};
  const std::vector<std::vector<float>> grads_b = {{1.0f}, {-1.0f}};
  double ref_w[2] = {1.0, -2.0}, ref_b = 0.5, m_w[2] = {0, 0}, v_w[2] = {0, 0}, m_b = 0, v_b = 0;
  for (int t = 1; t <= 2; ++t) {
    adam.step({std::span<float>(w), std::span<float>(b)},
              {std::span<const float>(grads_w[size_t(t - 1)]), std::span<const float>(grads_b[size_t(t - 1)])}, lr);
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (int j = 0; j < 2; ++j) {
      const double g = grads_w[size_t(t - 1)][size_t(j)];
      ref_w[j] *= 1 - lr * wd;
      m_w[j] = b1 * m_w[j] + (1 - b1) * g;
      v_w[j] = b2 * v_w[j] + (1 - b2) * g * g;
      ref_w[j] -= lr * (m_w[j] / bc1) / (std::sqrt(v_w[j] / bc2) + eps);
      EXPECT_NEAR(w[size_t(j)], ref_w[j], 1e-6 * std::abs(ref_w[j])) << "step " << t << " weight " << j;
    }
    const double g = grads_b[size_t(t - 1)][0];
    m_b = b1 * m_b + (1 - b1) * g;
    v_b = b2 * v_b + (1 - b2) * g * g;
    ref_b -= lr * (m_b / bc1) / (std::sqrt(v_b / bc2) + eps);  // biases are not decayed
    EXPECT_NEAR(b[0], ref_b, 1e-6) << "step " << t;
  }
  EXPECT_EQ(adam.steps(), 2);
}

TEST(ClipGradNorm, ScalesToMaxNormOnlyAboveIt) {
  std::vector<float> a = {3.0f}, b = {4.0f};
  EXPECT_DOUBLE_EQ(clip_grad_norm({std::span<float>(a), std::span<float>(b)}, 10.0), 5.0);
  EXPECT_EQ(a[0], 3.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm({std::span<float>(a), std::span<float>(b)}, 1.0), 5.0);
  EXPECT_NEAR(a[0], 0.6f, 1e-6);
  EXPECT_NEAR(b[0], 0.8f, 1e-6);
}

}  // namespace
}  // namespace qed::train
