// train_drafter end to end on a fixture model (tests/fixtures/hf/qwen2_tied_mha, the CPU backend for its hidden
// states): the loss falls on a learnable synthetic sequence task, a killed-and-resumed run reaches bit-identical
// weights, the output loads as the engine's ReDrafter drafter, and bad input fails with a message.
#include "train/drafter_trainer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "drafter_test_data.h"
#include "spec/redrafter_head.h"

namespace qed::train {
namespace {

namespace fs = std::filesystem;
const std::string kModel = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_tied_mha";

fs::path temp_dir(const std::string& name) {
  return fresh_temp_dir("qed_train_drafter_" + name);
}

TrainDrafterOptions small_options(const fs::path& dir, const std::string& data) {
  TrainDrafterOptions o;
  o.model_dir = kModel;
  o.data_path = data;
  o.out_dir = (dir / "out").string();
  o.n_tokens = 2;
  o.num_layers = 1;
  o.batch = 2;
  o.grad_accum = 2;
  o.lr = 3e-3;
  o.threads = 2;
  o.progress = false;
  return o;
}

std::vector<nlohmann::json> metrics_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(out + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(TrainDrafter, LossFallsOnALearnableTaskAndMetricsAreLogged) {
  const fs::path dir = temp_dir("loss");
  TrainDrafterOptions o = small_options(dir, write_counting_data(dir, 24));
  o.epochs = 5;  // 12 micro-batches of 2 per epoch, 6 steps each
  o.lr = 1e-2;
  const TrainDrafterResult result = train_drafter(o);
  EXPECT_EQ(result.steps, 30);
  const std::vector<nlohmann::json> lines = metrics_lines(o.out_dir);
  ASSERT_EQ(lines.size(), 30u);
  for (const char* key :
       {"loss", "lr", "grad_norm", "redrafter0_loss", "redrafter1_loss", "redrafter0_top1", "redrafter1_top5"}) {
    EXPECT_TRUE(lines.back().contains(key)) << key;
  }
  const double first = lines[1]["loss"].get<double>() + lines[2]["loss"].get<double>();
  const double last = lines[28]["loss"].get<double>() + lines[29]["loss"].get<double>();
  EXPECT_LT(last, 0.6 * first) << "first " << first / 2 << " last " << last / 2;
  EXPECT_GT(lines[29]["redrafter0_top1"].get<double>(), lines[1]["redrafter0_top1"].get<double>() + 0.3);
  EXPECT_EQ(lines[0]["lr"].get<double>(), 0.0);  // warmup starts at 0, as transformers' schedule

  // The output is a head the engine's drafter loads: RD config, the base model's hidden/vocab.
  const spec::RedrafterHead head = spec::RedrafterHead::load(o.out_dir);
  EXPECT_EQ(head.config().hidden_size, 64);
  EXPECT_EQ(head.config().vocab_size, 384);
  EXPECT_EQ(head.config().exit_dim, 128);
  EXPECT_TRUE(head.config().rnn);
  fs::remove_all(dir);
}

TEST(TrainDrafter, KilledAndResumedRunEndsWithTheSameWeightsAsAnUninterruptedOne) {
  const fs::path dir = temp_dir("resume");
  const std::string data = write_counting_data(dir, 24);
  TrainDrafterOptions whole = small_options(dir, data);
  whole.epochs = 2;  // 6 steps per epoch: the resume crosses the epoch boundary
  whole.save_every = 4;
  whole.out_dir = (dir / "whole").string();
  EXPECT_EQ(train_drafter(whole).steps, 12);

  TrainDrafterOptions killed = whole;
  killed.out_dir = (dir / "killed").string();
  killed.stop_after = 10;  // "killed" after step 10: only the step-8 checkpoint survives
  EXPECT_EQ(train_drafter(killed).steps, 10);
  EXPECT_FALSE(fs::exists(killed.out_dir + "/model.safetensors"));
  TrainDrafterOptions resumed = whole;
  resumed.out_dir = killed.out_dir;
  resumed.resume = true;
  EXPECT_EQ(train_drafter(resumed).steps, 12);

  EXPECT_EQ(file_bytes(whole.out_dir + "/model.safetensors"), file_bytes(resumed.out_dir + "/model.safetensors"));
  const auto a = metrics_lines(whole.out_dir), b = metrics_lines(resumed.out_dir);
  ASSERT_EQ(a.size(), b.size());  // steps 9–10 logged before the kill are not duplicated
  for (size_t k = 0; k < a.size(); ++k) EXPECT_EQ(a[k]["loss"], b[k]["loss"]) << "step " << k + 1;
  fs::remove_all(dir);
}

std::string error_of(const TrainDrafterOptions& o) {
  try {
    train_drafter(o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TrainDrafter, BadInputFailsWithAMessageNamingIt) {
  const fs::path dir = temp_dir("bad");
  const std::string data = write_counting_data(dir, 4);
  TrainDrafterOptions o = small_options(dir, (dir / "missing.jsonl").string());
  EXPECT_NE(error_of(o).find("missing.jsonl: no such data file"), std::string::npos) << error_of(o);

  std::ofstream((dir / "empty.jsonl").string()) << "\n\n";
  o.data_path = (dir / "empty.jsonl").string();
  EXPECT_NE(error_of(o).find("no rows"), std::string::npos) << error_of(o);

  std::ofstream((dir / "broken.jsonl").string()) << "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, \n";
  o.data_path = (dir / "broken.jsonl").string();
  EXPECT_NE(error_of(o).find("broken.jsonl:2: not valid JSON"), std::string::npos) << error_of(o);

  std::ofstream((dir / "big_id.jsonl").string()) << "{\"input_ids\": [1, 2, 3, 999]}\n";
  o.data_path = (dir / "big_id.jsonl").string();
  EXPECT_NE(error_of(o).find("outside the model's vocab of 384"), std::string::npos) << error_of(o);

  o.data_path = data;
  o.batch = 0;
  EXPECT_NE(error_of(o).find("--batch must be >= 1"), std::string::npos) << error_of(o);
  o.batch = 2;
  o.warmup_ratio = 1.5;
  EXPECT_NE(error_of(o).find("--warmup-ratio"), std::string::npos) << error_of(o);
  o.warmup_ratio = 0.1;
  o.model_dir = dir.string();
  EXPECT_NE(error_of(o).find("no config.json"), std::string::npos) << error_of(o);
  o.model_dir = kModel;

  o.resume = true;
  EXPECT_NE(error_of(o).find("has no checkpoint"), std::string::npos) << error_of(o);
  o.resume = false;
  o.max_steps = 1;
  EXPECT_EQ(error_of(o), "");
  EXPECT_NE(error_of(o).find("pass --resume"), std::string::npos) << "an existing checkpoint is not overwritten";
  o.resume = true;
  o.seed = 7;
  EXPECT_NE(error_of(o).find("--resume: seed was 42 in the checkpoint, now 7"), std::string::npos) << error_of(o);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace qed::train
