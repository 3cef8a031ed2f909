#include "train/adamw.h"

#include <cmath>
#include <numbers>
#include <utility>

#include "core/error.h"

namespace qed::train {

int64_t warmup_steps(double warmup_ratio, int64_t total_steps) {
  return int64_t(std::ceil(warmup_ratio * double(total_steps)));
}

double cosine_lr(double peak_lr, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return peak_lr * double(step) / double(std::max<int64_t>(1, warmup));
  const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  return peak_lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

double clip_grad_norm(const std::vector<std::span<float>>& grads, double max_norm) {
  double sum = 0.0;
  for (const std::span<float>& g : grads) {
    for (float x : g) sum += double(x) * double(x);
  }
  const double norm = std::sqrt(sum);
  if (max_norm > 0.0 && norm > max_norm) {
    const float scale = float(max_norm / (norm + 1e-6));
    for (const std::span<float>& g : grads) {
      for (float& x : g) x *= scale;
    }
  }
  return norm;
}

AdamW::AdamW(AdamWConfig config, const std::vector<size_t>& tensor_sizes, std::vector<bool> decays)
    : config_(config), decays_(std::move(decays)) {
  if (decays_.size() != tensor_sizes.size())
    fail("adamw: {} decay flags for {} tensors", decays_.size(), tensor_sizes.size());
  for (size_t size : tensor_sizes) {
    m_.emplace_back(size, 0.0f);
    v_.emplace_back(size, 0.0f);
  }
}

void AdamW::step(const std::vector<std::span<float>>& params, const std::vector<std::span<const float>>& grads,
                 double lr) {
  if (params.size() != m_.size() || grads.size() != m_.size())
    fail("adamw: {} tensors, expected {}", params.size(), m_.size());
  ++steps_;
  // torch.optim.AdamW (single-tensor path): p *= 1 - lr·wd; m, v updated; p -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps).
  const double bias1 = 1.0 - std::pow(config_.beta1, double(steps_));
  const double bias2 = 1.0 - std::pow(config_.beta2, double(steps_));
  const float step_size = float(lr / bias1);
  const float bias2_sqrt = float(std::sqrt(bias2));
  const float decay = float(1.0 - lr * config_.weight_decay);
  const float b1 = float(config_.beta1), b2 = float(config_.beta2), eps = float(config_.eps);
  for (size_t k = 0; k < params.size(); ++k) {
    std::span<float> p = params[k];
    std::span<const float> g = grads[k];
    const float tensor_decay = decays_[k] ? decay : 1.0f;
    std::vector<float>& m = m_[k];
    std::vector<float>& v = v_[k];
    if (p.size() != m.size() || g.size() != m.size()) fail("adamw: tensor {} changed size", k);
    for (size_t j = 0; j < p.size(); ++j) {
      p[j] *= tensor_decay;
      m[j] = b1 * m[j] + (1.0f - b1) * g[j];
      v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
      const float denom = std::sqrt(v[j]) / bias2_sqrt + eps;
      p[j] -= step_size * m[j] / denom;
    }
  }
}

}  // namespace qed::train
