#include "quant/calibration.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "backend/cpu/quant_ops.h"
#include "core/error.h"
#include "tokenizer/model_text_tools.h"

namespace qed::quant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> jsonl_files(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return {path};
  if (!fs::is_directory(path, ec)) fail("{}: no such calibration file or directory", path);
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(path)) {
    if (entry.is_regular_file() && entry.path().extension() == ".jsonl") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) fail("{}: no .jsonl files", path);
  return files;
}

// Lines of each file, read lazily so a 1,319-row file costs only the rows taken.
struct RowReader {
  std::string path;
  std::ifstream in;
  int line = 0;
  bool next(std::string& text) {
    while (std::getline(in, text)) {
      ++line;
      if (text.find_first_not_of(" \t\r") != std::string::npos) return true;
    }
    return false;
  }
};

struct Encoder {
  ModelTextTools text;

  const Tokenizer& tok(const std::string& where) { return text.tokenizer(where); }
  const ChatTemplate* chat_template() { return text.chat_template(); }

  std::vector<int32_t> encode(const json& row, const std::string& where) {
    if (!row.is_object()) fail("{}: calibration row must be a JSON object", where);
    if (auto ids = row.find("input_ids"); ids != row.end()) {
      if (!ids->is_array() || ids->empty()) fail("{}: 'input_ids' must be a non-empty list of token ids", where);
      std::vector<int32_t> out;
      for (const json& id : *ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
          fail("{}: 'input_ids' must hold non-negative integers", where);
        out.push_back(int32_t(id.get<int64_t>()));
      }
      return out;
    }
    auto string_of = [&](const char* key) -> std::optional<std::string> {
      auto it = row.find(key);
      if (it == row.end() || it->is_null()) return std::nullopt;
      if (!it->is_string()) fail("{}: '{}' must be a string", where, key);
      return it->get<std::string>();
    };
    if (auto text = string_of("text")) return tok(where).encode(*text);
    auto problem = string_of("problem");
    if (!problem) fail("{}: calibration row has none of 'input_ids', 'text', 'problem'", where);
    auto solution = string_of("solution");
    if (!solution) solution = string_of("generated_solution");
    const Tokenizer& t = tok(where);
    if (const ChatTemplate* chat = chat_template()) {
      std::vector<ChatMessage> messages = {{"user", *problem}};
      if (solution) messages.push_back({"assistant", *solution});
      ChatTemplate::Options options;
      options.add_generation_prompt = !solution;
      return t.encode(chat->render(messages, options));
    }
    return t.encode(solution ? *problem + "\n\n" + *solution : *problem);
  }
};

void raise(float& slot, float value, const char* what, int layer) {
  if (!std::isfinite(value)) fail("calibration: layer {}: {} has a non-finite activation ({})", layer, what, value);
  slot = std::max(slot, value);
}

class AmaxObserver final : public ForwardObserver {
 public:
  explicit AmaxObserver(CalibrationStats& stats) : stats_(stats) {}
  void linear_input(int layer, LinearInput site, const float* x, size_t count) override {
    LayerAmax& l = stats_.layers.at(size_t(layer));
    const float a = cpu::amax(x, count);
    switch (site) {
      case LinearInput::Qkv:
        raise(l.qkv_input, a, "the q/k/v input", layer);
        break;
      case LinearInput::O:
        raise(l.o_input, a, "the o_proj input", layer);
        break;
      case LinearInput::GateUp:
        raise(l.gate_up_input, a, "the gate/up input", layer);
        break;
      case LinearInput::Down:
        raise(l.down_input, a, "the down_proj input", layer);
        break;
    }
  }
  void kv_written(int layer, const float* k, const float* v, size_t count) override {
    LayerAmax& l = stats_.layers.at(size_t(layer));
    raise(l.k, cpu::amax(k, count), "K", layer);
    raise(l.v, cpu::amax(v, count), "V", layer);
  }

 private:
  CalibrationStats& stats_;
};

}  // namespace

std::vector<std::vector<int32_t>> load_calibration_samples(const CalibrationData& data, const std::string& model_dir) {
  if (data.samples <= 0) fail("--calib-samples must be positive, got {}", data.samples);
  if (data.seq_len <= 0) fail("--calib-seq-len must be positive, got {}", data.seq_len);
  std::vector<RowReader> readers;
  for (const std::string& file : jsonl_files(data.path)) {
    readers.push_back({file, std::ifstream(file), 0});
    if (!readers.back().in) fail("{}: cannot open", file);
  }
  Encoder encoder{ModelTextTools(model_dir, ModelTextTools::UnknownChatTemplate::Ignore)};
  std::vector<std::vector<int32_t>> samples;
  std::vector<bool> exhausted(readers.size(), false);
  size_t live = readers.size();
  for (size_t turn = 0; int(samples.size()) < data.samples && live > 0; ++turn) {
    const size_t f = turn % readers.size();
    if (exhausted[f]) continue;
    RowReader& reader = readers[f];
    std::string line;
    if (!reader.next(line)) {
      exhausted[f] = true;
      --live;
      continue;
    }
    const std::string where = fmt::format("{}:{}", reader.path, reader.line);
    json row;
    try {
      row = json::parse(line);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", where, e.what());
    }
    std::vector<int32_t> ids = encoder.encode(row, where);
    if (ids.empty()) continue;
    if (ids.size() > size_t(data.seq_len)) ids.resize(size_t(data.seq_len));
    samples.push_back(std::move(ids));
  }
  if (samples.empty()) fail("{}: no calibration samples", data.path);
  return samples;
}

void run_calibration_forwards(Backend& backend, const std::vector<std::vector<int32_t>>& samples,
                              CalibrationStats& stats, const CalibrationProgress& progress) {
  const int block_size = backend.kv_layout().block_size;
  for (const std::vector<int32_t>& ids : samples) {
    ForwardBatch batch;
    SequenceChunk& chunk = batch.sequences.emplace_back();
    chunk.tokens = ids;
    const int blocks = int((ids.size() + size_t(block_size) - 1) / size_t(block_size));
    if (blocks > backend.kv_layout().num_blocks) {
      fail("calibration: a sample of {} tokens needs {} KV blocks, the backend has {}", ids.size(), blocks,
           backend.kv_layout().num_blocks);
    }
    for (int b = 0; b < blocks; ++b) chunk.block_table.push_back(b);
    ForwardResult result;
    backend.forward(batch, result);
    ++stats.samples;
    stats.tokens += int64_t(ids.size());
    if (progress) progress(stats.samples, int(samples.size()), stats.tokens);
  }
}

void check_finite_amax(const CalibrationStats& stats) {
  for (size_t l = 0; l < stats.layers.size(); ++l) {
    const LayerAmax& a = stats.layers[l];
    const std::pair<const char*, float> sites[] = {{"the q/k/v input", a.qkv_input},
                                                   {"the o_proj input", a.o_input},
                                                   {"the gate/up input", a.gate_up_input},
                                                   {"the down_proj input", a.down_input},
                                                   {"K", a.k},
                                                   {"V", a.v}};
    for (const auto& [what, value] : sites) {
      if (!std::isfinite(value)) fail("calibration: layer {}: {} has a non-finite activation ({})", l, what, value);
    }
  }
}

CalibrationStats calibrate(CpuBackend& backend, const std::vector<std::vector<int32_t>>& samples,
                           const CalibrationProgress& progress) {
  CalibrationStats stats;
  stats.layers.resize(size_t(backend.config().num_layers));
  AmaxObserver observer(stats);
  backend.set_observer(&observer);
  struct Reset {
    CpuBackend& b;
    ~Reset() { b.set_observer(nullptr); }
  } reset{backend};
  run_calibration_forwards(backend, samples, stats, progress);
  return stats;
}

}  // namespace qed::quant
