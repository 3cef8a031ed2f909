#pragma once
// A block-wise FP8 checkpoint (the layout transformers' FineGrainedFP8Config and DeepSeek-V3 write) made from an
// unquantized model directory, for tests: every linear weight of the decoder layers not named by
// `modules_to_not_convert` becomes F8_E4M3 codes + an F32 `weight_scale_inv` [ceil(out / B0), in / B1] with
// s = amax(block) / 448 (1 for an all-zero block), codes = quantize_fp8(w, s); everything else is copied as it is.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cpu/quant_ops.h"
#include "core/dtype.h"
#include "core/error.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed::test {

inline bool is_decoder_linear_weight(const std::string& name) {
  if (name.rfind("model.layers.", 0) != 0) return false;
  for (const char* suffix : {".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".o_proj.weight",
                             ".gate_proj.weight", ".up_proj.weight", ".down_proj.weight"}) {
    const std::string s = suffix;
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) return true;
  }
  return false;
}

// `skip`: exact parameter names ("model.layers.1.mlp.down_proj.weight") left unquantized; `skip_config` is what
// config.json's modules_to_not_convert says (the loader must find the same modules from it).
inline void write_block_fp8_checkpoint(const std::string& source_dir, const std::string& out_dir, int block_out,
                                       int block_in, const std::vector<std::string>& skip = {},
                                       const std::vector<std::string>& skip_config = {}) {
  std::filesystem::create_directories(out_dir);
  const Checkpoint source = Checkpoint::open(source_dir);
  struct Owned {
    std::vector<uint8_t> codes;
    std::vector<float> scales;
  };
  std::vector<Owned> owned;
  std::vector<std::string> names = source.names();
  owned.reserve(names.size());
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : names) {
    const TensorInfo& t = source.get(name);
    if (!is_decoder_linear_weight(name) || std::find(skip.begin(), skip.end(), name) != skip.end()) {
      tensors.push_back({name, t.dtype, t.shape, t.data});
      continue;
    }
    const int rows = int(t.shape.at(0)), cols = int(t.shape.at(1));
    if (cols % block_in != 0) fail("{}: {} columns do not split into blocks of {}", name, cols, block_in);
    const int block_rows = (rows + block_out - 1) / block_out, block_cols = cols / block_in;
    const std::vector<float> w = tensor_to_f32(t);
    Owned& o = owned.emplace_back();
    o.codes.resize(w.size());
    o.scales.resize(size_t(block_rows) * size_t(block_cols));
    for (int br = 0; br < block_rows; ++br) {
      for (int bc = 0; bc < block_cols; ++bc) {
        const int r_end = std::min(rows, (br + 1) * block_out);
        float a = 0.0f;
        for (int r = br * block_out; r < r_end; ++r) {
          a = std::max(a, cpu::amax(w.data() + size_t(r) * cols + size_t(bc) * block_in, size_t(block_in)));
        }
        const float s = cpu::fp8_scale_for_amax(a);
        o.scales[size_t(br) * block_cols + bc] = s;
        for (int r = br * block_out; r < r_end; ++r) {
          const size_t at = size_t(r) * cols + size_t(bc) * block_in;
          cpu::quantize_fp8_per_tensor(w.data() + at, size_t(block_in), s, o.codes.data() + at);
        }
      }
    }
    tensors.push_back({name, DType::F8_E4M3, t.shape, o.codes.data()});
    const std::string scale_name = name.substr(0, name.size() - std::string(".weight").size()) + ".weight_scale_inv";
    tensors.push_back({scale_name, DType::F32, {block_rows, block_cols}, o.scales.data()});
  }
  write_safetensors(out_dir + "/model.safetensors", tensors);

  nlohmann::json config = nlohmann::json::parse(std::ifstream(source_dir + "/config.json"));
  config["quantization_config"] = {{"quant_method", "fp8"},
                                   {"activation_scheme", "dynamic"},
                                   {"weight_block_size", {block_out, block_in}},
                                   {"modules_to_not_convert", skip_config}};
  std::ofstream(out_dir + "/config.json") << config.dump(2);
}

// What the CUDA backend runs for a block-wise checkpoint, written out as a checkpoint of its own: every
// weight_scale_inv weight dequantized exactly (linear_to_f32, the CPU backend's q · scale of its block) and rounded
// once to bf16, with no quantization_config. The CUDA backend on it runs the same bf16 layers; the CPU backend on it
// is the fp32 reference of that choice (activations unquantized).
inline void write_dequantized_bf16_checkpoint(const std::string& block_dir, const std::string& out_dir) {
  std::filesystem::create_directories(out_dir);
  const Checkpoint source = Checkpoint::open(block_dir);
  nlohmann::json config = nlohmann::json::parse(std::ifstream(block_dir + "/config.json"));
  LinearScales scales;
  scales.block_out = config["quantization_config"]["weight_block_size"][0].get<int>();
  scales.block_in = config["quantization_config"]["weight_block_size"][1].get<int>();
  std::vector<std::string> names = source.names();
  std::vector<std::vector<uint16_t>> owned;
  owned.reserve(names.size());
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : names) {
    const TensorInfo& t = source.get(name);
    if (name.ends_with(".weight_scale_inv")) continue;
    scales.block_scale = name.ends_with(".weight") ? source.find(name + "_scale_inv") : nullptr;
    if (!scales.block_scale) {
      tensors.push_back({name, t.dtype, t.shape, t.data});
      continue;
    }
    std::vector<uint16_t>& values = owned.emplace_back();
    for (const float w : linear_to_f32(t, scales)) values.push_back(float_to_bf16(w));
    tensors.push_back({name, DType::BF16, t.shape, values.data()});
  }
  write_safetensors(out_dir + "/model.safetensors", tensors);
  config.erase("quantization_config");
  std::ofstream(out_dir + "/config.json") << config.dump(2);
}

}  // namespace qed::test
