// The trainer's loss, metrics and gradients against PyTorch: tests/fixtures/redrafter_grad/<case>/ is written by
// tools/make_redrafter_grad_fixture.py, which builds the head and RD's teacher-forced loss (torch.roll over the
// sequence, CrossEntropy with ignore_index) in float64. Skipped when the fixture has not been generated.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "drafter_test_data.h"
#include "model/safetensors.h"
#include "train/redrafter_loss.h"

namespace qed::train {
namespace {

const std::string kFixtures = std::string(QED_SOURCE_DIR) + "/tests/fixtures/redrafter_grad/";

void expect_matches_torch(const std::string& name) {
  const std::string dir = kFixtures + name;
  if (!std::filesystem::exists(dir + "/fixture.safetensors")) {
    GTEST_SKIP() << dir << " absent: run tools/make_redrafter_grad_fixture.py --out tests/fixtures/redrafter_grad";
  }
  const spec::RedrafterHead head = spec::RedrafterHead::load(dir);
  const SafetensorsFile fixture(dir + "/fixture.safetensors");
  ASSERT_EQ(fixture.tensors().at("input_ids").shape.size(), 2u);
  const std::vector<float> embeddings = fixture_tensor(fixture, "embeddings");
  const std::vector<float> loss_per_iteration = fixture_tensor(fixture, "loss_per_iteration");
  const std::vector<float> accuracy = fixture_tensor(fixture, "topk_accuracy");
  const int n_tokens = int(loss_per_iteration.size());
  const int top_k = int(accuracy.size()) / n_tokens;

  // The trainer's own path: draft positions of each sequence, their hidden rows, then the loss.
  const DraftRows rows = fixture_draft_rows(fixture, head.config().hidden_size, n_tokens);
  spec::RedrafterHead grads(head.config());
  const DraftMetrics m = redrafter_loss(head, rows, embeddings, top_k, &grads, 1.0f, nullptr);

  // fp32 against float64: relative 1e-5 on the loss, 1e-4 of the largest gradient entry per tensor.
  EXPECT_NEAR(m.total_loss(), fixture_tensor(fixture, "loss")[0], 1e-5 * std::abs(fixture_tensor(fixture, "loss")[0]));
  for (int i = 0; i < n_tokens; ++i) {
    EXPECT_NEAR(m.loss[size_t(i)], loss_per_iteration[size_t(i)], 1e-5) << "redrafter" << i << "_loss";
    for (int k = 0; k < top_k; ++k) {
      const double ours = double(m.hits[size_t(i)][size_t(k)]) / double(m.targets[size_t(i)]);
      EXPECT_NEAR(ours, accuracy[size_t(i * top_k + k)], 1e-6) << "redrafter" << i << "_top" << k + 1;
    }
  }
  int compared = 0;
  for (const auto& [prefix, linear] : grads.linears()) {
    for (const char* part : {".weight", ".bias"}) {
      const std::vector<float>& ours = std::string(part) == ".weight" ? linear->weight : linear->bias;
      if (ours.empty()) continue;
      const std::vector<float> expected = fixture_tensor(fixture, "grad." + prefix + part);
      ASSERT_EQ(ours.size(), expected.size()) << prefix << part;
      float scale = 0.0f;
      for (float g : expected) scale = std::max(scale, std::abs(g));
      for (size_t j = 0; j < ours.size(); ++j) {
        EXPECT_NEAR(ours[j], expected[j], 1e-4f * scale + 1e-7f) << prefix << part << "[" << j << "]";
      }
      ++compared;
    }
  }
  EXPECT_EQ(size_t(compared), fixture.tensors().size() - 7);  // every grad.* tensor of the fixture
}

TEST(RedrafterTorchFixture, LossMetricsAndGradientsMatchWithRnnAndInputProjection) {
  expect_matches_torch("rnn_input_proj");
}

TEST(RedrafterTorchFixture, LossMetricsAndGradientsMatchWithCumulativeStateAndNoProjection) {
  expect_matches_torch("cumsum_no_proj");
}

}  // namespace
}  // namespace qed::train
