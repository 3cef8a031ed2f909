#include "quant/quantized_checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "backend/cpu/quant_ops.h"
#include "core/error.h"
#include "core/mmap_file.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed::quant {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

// The files a tokenizer/generation setup consists of in an HF model directory (copied when present).
constexpr const char* kSideFiles[] = {"tokenizer.json",
                                      "tokenizer_config.json",
                                      "special_tokens_map.json",
                                      "generation_config.json",
                                      "chat_template.jinja",
                                      "vocab.json",
                                      "merges.txt",
                                      "added_tokens.json"};

// compressed-tensors' per-tensor FP8 quantization args (its QuantizationArgs fields, as llm-compressor writes).
ordered_json float8_args(const char* strategy, bool dynamic) {
  return {{"num_bits", 8}, {"type", "float"}, {"symmetric", true}, {"strategy", strategy}, {"dynamic", dynamic}};
}

ordered_json quantization_config(const QuantizeOptions& options) {
  if (options.method == QuantMethod::Fp8 && !options.per_channel) {
    // vLLM's Fp8Config (quant_method "fp8", the AutoFP8 layout): loaded with no --quantization flag.
    return {{"quant_method", "fp8"}, {"activation_scheme", "static"}, {"ignored_layers", {"lm_head"}}};
  }
  // Per-channel FP8 and int8 weight-only are expressed in compressed-tensors' schema, which has a strategy field.
  ordered_json group;
  group["targets"] = {"Linear"};
  if (options.method == QuantMethod::Fp8) {
    group["weights"] = float8_args("channel", false);
    group["input_activations"] = float8_args("tensor", false);
  } else {
    group["weights"] = {
        {"num_bits", 8}, {"type", "int"}, {"symmetric", true}, {"strategy", "channel"}, {"dynamic", false}};
    group["input_activations"] = nullptr;
  }
  ordered_json config = {{"quant_method", "compressed-tensors"},
                         {"format", options.method == QuantMethod::Fp8 ? "float-quantized" : "int-quantized"},
                         {"quantization_status", "compressed"},
                         {"config_groups", {{"group_0", group}}},
                         {"ignore", {"lm_head"}}};
  if (options.kv_cache_fp8) config["kv_cache_scheme"] = float8_args("tensor", false);
  return config;
}

// Owns the bytes of every tensor that is written: quantized buffers, scales, and views of the copied ones.
struct OutputTensors {
  std::vector<TensorToWrite> list;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> buffers;

  void copy(const TensorInfo& t) { list.push_back({t.name, t.dtype, t.shape, t.data}); }
  template <typename T>
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
    auto& bytes = buffers.emplace_back(std::make_unique<std::vector<uint8_t>>(values.size() * sizeof(T)));
    std::memcpy(bytes->data(), values.data(), bytes->size());
    list.push_back({name, dtype, std::move(shape), bytes->data()});
  }
  void scalar(const std::string& name, float value) { add(name, DType::F32, {}, std::vector<float>{value}); }
};

void check_finite(const std::vector<float>& w, const std::string& name) {
  for (float v : w) {
    if (!std::isfinite(v)) fail("{}: weight has a non-finite value ({}); refusing to quantize", name, v);
  }
}

void quantize_linear(const TensorInfo& weight, const std::string& module, float input_amax,
                     const QuantizeOptions& options, OutputTensors& out) {
  const std::vector<float> w = tensor_to_f32(weight);
  check_finite(w, weight.name);
  const int rows = int(weight.shape.at(0)), cols = int(weight.shape.at(1));
  if (options.method == QuantMethod::Int8WeightOnly) {
    std::vector<float> scales(static_cast<size_t>(rows));
    std::vector<int8_t> q(w.size());
    cpu::quantize_int8_per_channel(w.data(), rows, cols, scales.data(), q.data());
    out.add(module + ".weight", DType::I8, weight.shape, q);
    out.add(module + ".weight_scale", DType::F32, {int64_t(rows), 1}, scales);
    return;
  }
  std::vector<uint8_t> q(w.size());
  if (options.per_channel) {
    std::vector<float> scales(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r)
      scales[size_t(r)] = cpu::fp8_scale_for_amax(cpu::amax(&w[size_t(r) * cols], size_t(cols)));
    cpu::quantize_fp8_per_channel(w.data(), rows, cols, scales.data(), q.data());
    out.add(module + ".weight_scale", DType::F32, {int64_t(rows), 1}, scales);
  } else {
    const float scale = cpu::fp8_scale_for_amax(cpu::amax(w.data(), w.size()));
    cpu::quantize_fp8_per_tensor(w.data(), w.size(), scale, q.data());
    out.scalar(module + ".weight_scale", scale);
  }
  out.add(module + ".weight", DType::F8_E4M3, weight.shape, q);
  out.scalar(module + ".input_scale", cpu::fp8_scale_for_amax(input_amax));
}

}  // namespace

std::string quantization_config_json(const QuantizeOptions& options) {
  return quantization_config(options).dump();
}

void write_quantized_checkpoint(const std::string& model_dir, const std::string& out_dir,
                                const QuantizeOptions& options, const CalibrationStats* stats) {
  if (options.method == QuantMethod::None) fail("quantize: no quantization method given");
  if ((options.method == QuantMethod::Fp8 || options.kv_cache_fp8) && !stats) {
    fail("quantize: FP8 activation and KV scales need calibration statistics");
  }
  std::error_code ec;
  if (fs::exists(out_dir, ec) && fs::equivalent(model_dir, out_dir, ec)) {
    fail("{}: --out must differ from --model (the source checkpoint is read while writing)", out_dir);
  }
  const std::string config_path = model_dir + "/config.json";
  const ModelConfig config = ModelConfig::from_file(config_path);
  if (config.quantization.quantized()) {
    fail("{}: the model is already quantized ({}); quantize its bf16 original", model_dir, config.quantization.format);
  }
  if (stats && stats->layers.size() != size_t(config.num_layers)) {
    fail("quantize: calibration has {} layers, the model {}", stats->layers.size(), config.num_layers);
  }
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  (void)ModelWeights::bind(checkpoint, config);  // every tensor present with its shape, before anything is written

  // Decoder linear weights → (layer, site of the input they read).
  std::map<std::string, std::pair<int, float LayerAmax::*>> linears;
  for (int l = 0; l < config.num_layers; ++l) {
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
      linears[layer_tensor_name(l, m)] = {l, &LayerAmax::qkv_input};
    linears[layer_tensor_name(l, "self_attn.o_proj")] = {l, &LayerAmax::o_input};
    linears[layer_tensor_name(l, "mlp.gate_proj")] = {l, &LayerAmax::gate_up_input};
    linears[layer_tensor_name(l, "mlp.up_proj")] = {l, &LayerAmax::gate_up_input};
    linears[layer_tensor_name(l, "mlp.down_proj")] = {l, &LayerAmax::down_input};
  }

  OutputTensors out;
  for (const std::string& name : checkpoint.names()) {
    const TensorInfo& tensor = checkpoint.get(name);
    const std::string suffix = ".weight";
    const bool is_weight = name.size() > suffix.size() && name.ends_with(suffix);
    const std::string module = is_weight ? name.substr(0, name.size() - suffix.size()) : "";
    auto linear = linears.find(module);
    if (!is_weight || linear == linears.end()) {
      out.copy(tensor);
      continue;
    }
    const auto [layer, site] = linear->second;
    const float input_amax = stats ? stats->layers[size_t(layer)].*site : 0.0f;
    quantize_linear(tensor, module, input_amax, options, out);
  }
  if (options.kv_cache_fp8) {
    for (int l = 0; l < config.num_layers; ++l) {
      out.scalar(layer_tensor_name(l, "self_attn.k_scale"), cpu::fp8_scale_for_amax(stats->layers[size_t(l)].k));
      out.scalar(layer_tensor_name(l, "self_attn.v_scale"), cpu::fp8_scale_for_amax(stats->layers[size_t(l)].v));
    }
  }

  fs::create_directories(out_dir, ec);
  if (ec) fail("{}: cannot create directory: {}", out_dir, ec.message());
  // Sharded sources become one file; an index left from an earlier run would shadow nothing (the single file wins
  // in every loader) but would mislead, so it is removed.
  fs::remove(fs::path(out_dir) / "model.safetensors.index.json", ec);
  write_safetensors(out_dir + "/model.safetensors", out.list, {{"format", "pt"}, {"quantized_by", "qed quantize"}});

  ordered_json config_json = ordered_json::parse(read_text_file(config_path));
  config_json["quantization_config"] = quantization_config(options);
  const std::string config_out = out_dir + "/config.json";
  {
    std::ofstream config_file(config_out);
    config_file << config_json.dump(2) << "\n";
    if (!config_file) fail("{}: cannot write", config_out);
  }
  for (const char* file : kSideFiles) {
    const fs::path from = fs::path(model_dir) / file;
    if (fs::is_regular_file(from, ec)) {
      fs::copy_file(from, fs::path(out_dir) / file, fs::copy_options::overwrite_existing, ec);
      if (ec) fail("{}: cannot copy to {}: {}", from.string(), out_dir, ec.message());
    }
  }
  if (stats) {
    ordered_json calib = {{"samples", stats->samples}, {"tokens", stats->tokens}, {"layers", ordered_json::array()}};
    for (const LayerAmax& l : stats->layers) {
      calib["layers"].push_back({{"qkv_input", l.qkv_input},
                                 {"o_input", l.o_input},
                                 {"gate_up_input", l.gate_up_input},
                                 {"down_input", l.down_input},
                                 {"k", l.k},
                                 {"v", l.v}});
    }
    std::ofstream(out_dir + "/qed_calibration.json") << calib.dump(1) << "\n";
  }
}

}  // namespace qed::quant
