// The trainer's head forward/backward: gradients against central finite differences for every parameter tensor,
// the teacher-forced logits against the inference head (RedrafterHead::log_probs after update_state), and the row
// alignment (context h_t, input x_{t+i+1}, target x_{t+i+2}).
#include "train/redrafter_loss.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "core/thread_pool.h"

namespace qed::train {
namespace {

using spec::RedrafterConfig;
using spec::RedrafterHead;

struct Problem {
  RedrafterHead head;
  DraftRows rows;
  std::vector<float> embeddings;
};

Problem random_problem(RedrafterConfig config, size_t num_rows, int n_tokens, uint64_t seed, float scale) {
  Problem p{RedrafterHead::random(config, seed, scale), {}, {}};
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  p.embeddings.resize(size_t(config.vocab_size) * size_t(config.hidden_size));
  for (float& x : p.embeddings) x = 0.7f * normal(rng);
  p.rows.rows = num_rows;
  p.rows.n_tokens = n_tokens;
  for (size_t r = 0; r < num_rows * size_t(config.hidden_size); ++r) p.rows.context.push_back(normal(rng));
  for (size_t r = 0; r < num_rows * size_t(n_tokens); ++r) {
    p.rows.inputs.push_back(int32_t(rng() % uint64_t(config.vocab_size)));
    p.rows.targets.push_back(rng() % 5 == 0 ? kIgnoreLabel : int32_t(rng() % uint64_t(config.vocab_size)));
  }
  return p;
}

double loss_of(const Problem& p) {
  return redrafter_loss(p.head, p.rows, p.embeddings, 1, nullptr, 1.0f, nullptr).total_loss();
}

// Central differences in fp32 with step 1e-2 on weights of scale 0.5: the truncation error (∝ step²) and the fp32
// rounding of the loss (~1e-7, divided by 2·step) both stay below 1e-4, so 2e-3 absolute + 1% relative separates a
// correct gradient from any wrong term (a missing path changes a gradient by its own size, typically 0.01–1).
void expect_gradients_match_finite_differences(RedrafterConfig config) {
  Problem p = random_problem(config, 6, 3, 11, 0.5f);
  RedrafterHead grads(config);
  redrafter_loss(p.head, p.rows, p.embeddings, 1, &grads, 1.0f, nullptr);
  constexpr float kStep = 1e-2f;
  auto params = p.head.linears();
  auto analytic = grads.linears();
  ASSERT_EQ(params.size(), analytic.size());
  int checked = 0;
  for (size_t k = 0; k < params.size(); ++k) {
    for (int which = 0; which < 2; ++which) {
      std::vector<float>& values = which == 0 ? params[k].second->weight : params[k].second->bias;
      const std::vector<float>& expected = which == 0 ? analytic[k].second->weight : analytic[k].second->bias;
      for (size_t j = 0; j < values.size(); ++j) {
        const float saved = values[j];
        values[j] = saved + kStep;
        const double up = loss_of(p);
        values[j] = saved - kStep;
        const double down = loss_of(p);
        values[j] = saved;
        const double numeric = (up - down) / (2.0 * double(kStep));
        EXPECT_NEAR(expected[j], numeric, 2e-3 + 1e-2 * std::abs(numeric))
            << params[k].first << (which == 0 ? ".weight[" : ".bias[") << j << "]";
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 50);
}

TEST(RedrafterLoss, GradientsMatchFiniteDifferencesWithRnnAndInputProjection) {
  expect_gradients_match_finite_differences(
      {.vocab_size = 7, .hidden_size = 3, .exit_dim = 5, .num_draft_layers = 2, .rnn = true});
}

TEST(RedrafterLoss, GradientsMatchFiniteDifferencesWithCumulativeStateAndNoProjection) {
  expect_gradients_match_finite_differences(
      {.vocab_size = 6, .hidden_size = 3, .exit_dim = 6, .num_draft_layers = 1, .rnn = false});
}

TEST(RedrafterLoss, GradScaleScalesTheGradientAndThreadsDoNotChangeIt) {
  const RedrafterConfig config{.vocab_size = 9, .hidden_size = 4, .exit_dim = 8, .num_draft_layers = 2, .rnn = true};
  Problem p = random_problem(config, 40, 3, 5, 0.5f);
  RedrafterHead once(config), twice(config), threaded(config);
  redrafter_loss(p.head, p.rows, p.embeddings, 2, &once, 0.5f, nullptr);
  redrafter_loss(p.head, p.rows, p.embeddings, 2, &twice, 1.0f, nullptr);
  ThreadPool pool(3);
  redrafter_loss(p.head, p.rows, p.embeddings, 2, &threaded, 1.0f, &pool);
  auto a = once.linears(), b = twice.linears(), c = threaded.linears();
  for (size_t k = 0; k < a.size(); ++k) {
    for (size_t j = 0; j < a[k].second->weight.size(); ++j) {
      EXPECT_FLOAT_EQ(2.0f * a[k].second->weight[j], b[k].second->weight[j]) << a[k].first;
    }
    EXPECT_EQ(b[k].second->weight, c[k].second->weight) << a[k].first << ": the thread count changed the sums";
    EXPECT_EQ(b[k].second->bias, c[k].second->bias) << a[k].first;
  }
}

// The inference path: state updated by each input in turn from zero, then log_probs (max shift, top-50 warp,
// log-softmax). With at most 50 tokens the warp keeps everything, so it must equal the log-softmax of the
// trainer's logits; with more, the kept top-50 entries must equal the log-softmax over those 50.
void expect_training_forward_equals_inference(RedrafterConfig config) {
  const int n_tokens = 4;
  Problem p = random_problem(config, 5, n_tokens, 3, 0.4f);
  const std::vector<std::vector<float>> logits = redrafter_logits(p.head, p.rows, p.embeddings, nullptr);
  ASSERT_EQ(logits.size(), size_t(n_tokens));
  const size_t h = size_t(config.hidden_size), v = size_t(config.vocab_size);
  for (size_t r = 0; r < p.rows.rows; ++r) {
    std::vector<float> state(h, 0.0f), inference(v);
    const std::span<const float> context(p.rows.context.data() + r * h, h);
    for (int i = 0; i < n_tokens; ++i) {
      const size_t token = size_t(p.rows.inputs[r * size_t(n_tokens) + size_t(i)]);
      p.head.update_state(std::span<const float>(p.embeddings.data() + token * h, h), state);
      p.head.log_probs(context, state, inference);
      const float* l = logits[size_t(i)].data() + r * v;
      std::vector<float> sorted(l, l + v);
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      const float kth = sorted[std::min<size_t>(50, v) - 1];
      double sum = 0.0;
      for (size_t j = 0; j < v; ++j) sum += l[j] >= kth ? std::exp(double(l[j]) - double(sorted[0])) : 0.0;
      for (size_t j = 0; j < v; ++j) {
        if (l[j] >= kth) {
          EXPECT_NEAR(inference[j], double(l[j]) - double(sorted[0]) - std::log(sum), 2e-5)
              << "row " << r << " iteration " << i << " token " << j;
        } else {
          EXPECT_LT(inference[j], -40000.0f) << "token " << j << " outside the top 50 kept";
        }
      }
    }
  }
}

TEST(RedrafterLoss, TrainingForwardEqualsInferenceForwardWithinTheTop50) {
  expect_training_forward_equals_inference(
      {.vocab_size = 37, .hidden_size = 5, .exit_dim = 7, .num_draft_layers = 2, .rnn = true});
  expect_training_forward_equals_inference(
      {.vocab_size = 37, .hidden_size = 5, .exit_dim = 10, .num_draft_layers = 2, .rnn = false});
}

TEST(RedrafterLoss, TrainingForwardEqualsInferenceForwardBeyondTheTop50) {
  expect_training_forward_equals_inference(
      {.vocab_size = 130, .hidden_size = 6, .exit_dim = 12, .num_draft_layers = 1, .rnn = true});
}

TEST(RedrafterRows, RowTIsContextHtInputsXtPlusIPlus1TargetsXtPlusIPlus2) {
  Example e;
  e.ids = {10, 11, 12, 13, 14, 15};
  e.labels = {kIgnoreLabel, kIgnoreLabel, kIgnoreLabel, kIgnoreLabel, 14, 15};  // only 14, 15 supervised
  // n = 2: t predicts t+2 and t+3, so t = 1 (→ 14 at i = 1), 2, 3 have a target; t = 0 reaches only 12, 13.
  const std::vector<int32_t> positions = draft_positions(e, 2);
  EXPECT_EQ(positions, (std::vector<int32_t>{1, 2, 3}));
  DraftRows rows;
  rows.n_tokens = 2;
  const std::vector<float> hidden = {1, 2, 3};  // hidden_size 1: h_1, h_2, h_3
  append_draft_rows(e, positions, hidden, 1, rows);
  EXPECT_EQ(rows.rows, 3u);
  EXPECT_EQ(rows.context, hidden);
  EXPECT_EQ(rows.inputs, (std::vector<int32_t>{12, 13, 13, 14, 14, 15}));
  EXPECT_EQ(rows.targets, (std::vector<int32_t>{kIgnoreLabel, 14, 14, 15, 15, kIgnoreLabel}));
}

TEST(RedrafterLoss, MetricsCountTopKHitsOfSupervisedTargets) {
  const RedrafterConfig config{.vocab_size = 4, .hidden_size = 2, .exit_dim = 4, .num_draft_layers = 0, .rnn = false};
  RedrafterHead head(config);
  // Logits = vocab_proj · [context, state]: token j scores j × context[0], so the order is 3 > 2 > 1 > 0.
  for (int j = 0; j < 4; ++j) head.vocab_proj.weight[size_t(j) * 4] = float(j);
  DraftRows rows;
  rows.rows = 3;
  rows.n_tokens = 1;
  rows.context = {1, 0, 1, 0, 1, 0};
  rows.inputs = {0, 0, 0};
  rows.targets = {3, 1, kIgnoreLabel};
  const std::vector<float> embeddings(8, 0.0f);
  const DraftMetrics m = redrafter_loss(head, rows, embeddings, 3, nullptr, 1.0f, nullptr);
  EXPECT_EQ(m.targets[0], 2);
  EXPECT_EQ(m.hits[0], (std::vector<int64_t>{1, 1, 2}));  // 3 is top-1; 1 is third
  const double lse = std::log(std::exp(0.0) + std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(m.loss[0], ((lse - 3.0) + (lse - 1.0)) / 2.0, 1e-6);
}

}  // namespace
}  // namespace qed::train
