#pragma once
// Data the drafter-training tests share (tests/train, and the CUDA head step's tests/backend_cuda/cuda_head_step_test
// .cpp): a fresh temporary directory, the counting-sequence dataset, and the PyTorch gradient fixtures
// (tests/fixtures/redrafter_grad/<case>/, tools/make_redrafter_grad_fixture.py) as the trainer's draft rows.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/safetensors.h"
#include "model/weights.h"
#include "train/redrafter_loss.h"

namespace qed::train {

// An empty directory of the system's temporary directory, named for `name` and this process.
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Counting sequences (x_{t+1} = x_t + step mod 64, offset 100): the next tokens follow from the last one, so a
// draft head can learn them from the input embedding alone. The first 3 tokens are an unsupervised "prompt".
// Written to dir/data.jsonl; returns its path.
inline std::string write_counting_data(const std::filesystem::path& dir, int rows) {
  const std::string path = (dir / "data.jsonl").string();
  std::ofstream out(path);
  std::mt19937_64 rng(1);
  for (int r = 0; r < rows; ++r) {
    const int start = int(rng() % 64), step = 1 + int(rng() % 2), length = 16 + int(rng() % 8);
    nlohmann::json ids = nlohmann::json::array(), labels = nlohmann::json::array();
    for (int t = 0; t < length; ++t) {
      const int id = 100 + (start + step * t) % 64;
      ids.push_back(id);
      labels.push_back(t < 3 ? -100 : id);
    }
    out << nlohmann::json{{"input_ids", ids}, {"labels", labels}}.dump() << "\n";
  }
  return path;
}

inline std::vector<float> fixture_tensor(const SafetensorsFile& fixture, const std::string& name) {
  auto it = fixture.tensors().find(name);
  if (it == fixture.tensors().end()) throw std::runtime_error("fixture has no tensor " + name);
  return tensor_to_f32(it->second);
}

// The fixture's sequences (input_ids, labels: batch × length; hidden: batch × length × hidden_size) through the
// trainer's own path: the draft positions of each sequence, their hidden rows, n_tokens targets each.
inline DraftRows fixture_draft_rows(const SafetensorsFile& fixture, int hidden_size, int n_tokens) {
  const std::vector<int64_t> shape = fixture.tensors().at("input_ids").shape;
  if (shape.size() != 2) throw std::runtime_error("fixture input_ids is not batch × length");
  const size_t batch = size_t(shape[0]), length = size_t(shape[1]), h = size_t(hidden_size);
  const std::vector<float> hidden = fixture_tensor(fixture, "hidden"), ids = fixture_tensor(fixture, "input_ids"),
                           labels = fixture_tensor(fixture, "labels");
  DraftRows rows;
  rows.n_tokens = n_tokens;
  for (size_t b = 0; b < batch; ++b) {
    Example e;
    for (size_t t = 0; t < length; ++t) {
      e.ids.push_back(int32_t(ids[b * length + t]));
      e.labels.push_back(int32_t(labels[b * length + t]));
    }
    const std::vector<int32_t> positions = draft_positions(e, n_tokens);
    std::vector<float> rows_hidden;
    for (int32_t t : positions) {
      const float* src = hidden.data() + (b * length + size_t(t)) * h;
      rows_hidden.insert(rows_hidden.end(), src, src + h);
    }
    append_draft_rows(e, positions, rows_hidden, int(h), rows);
  }
  return rows;
}

}  // namespace qed::train
