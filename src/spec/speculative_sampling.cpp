#include "spec/speculative_sampling.h"

#include <algorithm>
#include <vector>

#include "core/error.h"

namespace qed::spec {

int32_t draw_from_weights(std::span<const double> weights, double u) {
  double total = 0.0;
  for (double w : weights) total += std::max(w, 0.0);
  if (total <= 0.0) return -1;
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last = -1;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] <= 0.0) continue;
    last = static_cast<int32_t>(i);
    cumulative += weights[i];
    if (target < cumulative) return last;
  }
  return last;
}

SpeculativeDraw speculative_accept(std::span<const double> p, std::span<const double> q, int32_t draft, double u_accept,
                                   double u_resample) {
  if (p.size() != q.size() || p.empty()) fail("speculative sampling: p has {} entries, q has {}", p.size(), q.size());
  if (draft < 0 || static_cast<size_t>(draft) >= p.size()) fail("speculative sampling: draft {} outside p", draft);
  const double pd = p[static_cast<size_t>(draft)];
  const double qd = q[static_cast<size_t>(draft)];
  if (qd > 0.0 && u_accept * qd < pd) return {draft, true};  // u < p/q without dividing
  std::vector<double> residual(p.size());
  for (size_t i = 0; i < p.size(); ++i) residual[i] = std::max(p[i] - q[i], 0.0);
  int32_t token = draw_from_weights(residual, u_resample);
  // p == q leaves no residual, but then the draft is always accepted above; rounding can still land here.
  if (token < 0) token = draw_from_weights(p, u_resample);
  return {token, false};
}

}  // namespace qed::spec
