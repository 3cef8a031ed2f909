#include "backend/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "core/error.h"

namespace qed {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// softmax(logits) in double, so the probabilities the filters and the draw use do not depend on summation order.
std::vector<double> probabilities(std::span<const float> logits) {
  float max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> probs(logits.size());
  if (max == kNegInf) return probs;
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    probs[i] = std::exp(double(logits[i]) - double(max));
    sum += probs[i];
  }
  for (double& p : probs) p /= sum;
  return probs;
}

void apply_repetition_penalty(std::span<float> logits, float penalty, std::span<const int32_t> history) {
  // HF RepetitionPenaltyLogitsProcessor: each distinct token seen once, positive logits divided, others multiplied.
  std::unordered_set<int32_t> seen;
  for (int32_t token : history) {
    if (token < 0 || size_t(token) >= logits.size() || !seen.insert(token).second) continue;
    float& logit = logits[size_t(token)];
    logit = logit > 0.0f ? logit / penalty : logit * penalty;
  }
}

void apply_top_k(std::span<float> logits, int top_k) {
  if (top_k <= 0 || size_t(top_k) >= logits.size()) return;
  std::vector<float> sorted(logits.begin(), logits.end());
  std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[size_t(top_k - 1)];
  // HF removes scores < the k-th largest, so ties with it stay.
  for (float& logit : logits) {
    if (logit < kth) logit = kNegInf;
  }
}

void apply_top_p(std::span<float> logits, float top_p) {
  if (top_p >= 1.0f) return;
  // HF TopPLogitsWarper: sort ascending, drop the low tail whose cumulative probability is <= 1 - top_p, always
  // keep the most likely token.
  const std::vector<double> probs = probabilities(logits);
  std::vector<size_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] < logits[b]; });
  double cumulative = 0.0;
  const double threshold = 1.0 - double(top_p);
  for (size_t rank = 0; rank + 1 < order.size(); ++rank) {
    cumulative += probs[order[rank]];
    if (cumulative > threshold) break;
    logits[order[rank]] = kNegInf;
  }
}

void apply_min_p(std::span<float> logits, float min_p) {
  if (min_p <= 0.0f) return;
  // HF MinPLogitsWarper: drop tokens whose probability is below min_p × the top probability.
  const std::vector<double> probs = probabilities(logits);
  const double top = *std::max_element(probs.begin(), probs.end());
  for (size_t i = 0; i < logits.size(); ++i) {
    if (probs[i] < double(min_p) * top) logits[i] = kNegInf;
  }
}

}  // namespace

void check_sampling_params(const SamplingParams& params) {
  if (!(params.temperature >= 0.0f) || !std::isfinite(params.temperature))
    fail("sampling: temperature must be >= 0, got {}", params.temperature);
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) fail("sampling: top_p must be in (0, 1], got {}", params.top_p);
  if (params.top_k < 0) fail("sampling: top_k must be >= 0, got {}", params.top_k);
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) fail("sampling: min_p must be in [0, 1], got {}", params.min_p);
  if (!(params.repetition_penalty > 0.0f) || !std::isfinite(params.repetition_penalty))
    fail("sampling: repetition_penalty must be > 0, got {}", params.repetition_penalty);
  if (params.logprobs < -1) fail("sampling: logprobs must be >= -1, got {}", params.logprobs);
}

namespace {

size_t argmax(std::span<const float> logits) {
  return size_t(std::max_element(logits.begin(), logits.end()) - logits.begin());  // first of equal maxima
}

}  // namespace

double sampling_uniform(uint64_t seed, uint64_t step) {
  // Two rounds of splitmix64 over (seed, step): a counter-based stream, no state carried between draws.
  uint64_t bits = splitmix64(splitmix64(seed) ^ step);
  return double(bits >> 11) * 0x1.0p-53;  // [0, 1) with 53 random bits
}

void process_logits(std::span<float> logits, const SamplingParams& params, std::span<const int32_t> history) {
  check_sampling_params(params);
  if (params.repetition_penalty != 1.0f) apply_repetition_penalty(logits, params.repetition_penalty, history);
  if (params.temperature <= 0.0f) return;
  if (params.temperature != 1.0f) {
    for (float& logit : logits) logit /= params.temperature;
  }
  apply_top_k(logits, params.top_k);
  apply_top_p(logits, params.top_p);
  apply_min_p(logits, params.min_p);
}

SampledToken sample_token(std::span<const float> logits, const SamplingParams& params, uint64_t seed, uint64_t step,
                          std::span<const int32_t> history) {
  if (logits.empty()) fail("sampling: empty logits");
  std::vector<float> processed(logits.begin(), logits.end());
  process_logits(processed, params, history);

  SampledToken sampled;
  if (params.temperature <= 0.0f) {
    sampled.token = int32_t(argmax(processed));
  } else {
    const std::vector<double> probs = probabilities(processed);
    // Inverse CDF in token-id order; the last kept token absorbs rounding so a draw near 1 still lands somewhere.
    const double u = sampling_uniform(seed, step);
    double cumulative = 0.0;
    sampled.token = int32_t(argmax(processed));
    int32_t last_kept = sampled.token;
    bool found = false;
    for (size_t i = 0; i < probs.size() && !found; ++i) {
      if (probs[i] <= 0.0) continue;
      last_kept = int32_t(i);
      cumulative += probs[i];
      if (u < cumulative) {
        sampled.token = int32_t(i);
        found = true;
      }
    }
    if (!found) sampled.token = last_kept;
  }

  if (params.logprobs >= 0) {
    // Log-softmax of the raw logits (before penalties and temperature), as vLLM reports by default.
    float max = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (float logit : logits) sum += std::exp(double(logit) - double(max));
    const double log_sum = double(max) + std::log(sum);
    sampled.logprob = float(double(logits[size_t(sampled.token)]) - log_sum);
    const size_t k = std::min(size_t(params.logprobs), logits.size());
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
    });
    for (size_t i = 0; i < k; ++i) {
      sampled.top.push_back({order[i], float(double(logits[size_t(order[i])]) - log_sum)});
    }
  }
  return sampled;
}

}  // namespace qed
