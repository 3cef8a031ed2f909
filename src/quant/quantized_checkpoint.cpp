#include "quant/quantized_checkpoint.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>
#include <vector>

#include "backend/cpu/quant_ops.h"
#include "core/error.h"
#include "core/mmap_file.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "quant/output_shards.h"
#include "quant/weight_quantizer.h"

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

// One unit of work: a source tensor (quantized, or copied as it is) or a computed scalar, and the output tensors
// it produces. Jobs write disjoint byte ranges, so they run in any order on any thread.
struct Job {
  const TensorInfo* source = nullptr;  // null for a scalar
  bool quantize = false;
  float input_amax = 0.0f;
  float scalar = 0.0f;
  std::vector<OutputTensor> outputs;  // outputs[0] is the weight (or the copy / the scalar)
};

std::vector<OutputTensor> linear_outputs(const TensorInfo& weight, const std::string& module,
                                         const QuantizeOptions& options) {
  const int64_t rows = weight.shape.at(0);
  if (options.method == QuantMethod::Int8WeightOnly) {
    return {{module + ".weight", DType::I8, weight.shape}, {module + ".weight_scale", DType::F32, {rows, 1}}};
  }
  std::vector<int64_t> scale_shape;
  if (options.per_channel) scale_shape = {rows, 1};
  return {{module + ".weight", DType::F8_E4M3, weight.shape},
          {module + ".weight_scale", DType::F32, scale_shape},
          {module + ".input_scale", DType::F32, {}}};
}

void run_job(const Job& job, const QuantizeOptions& options, const OutputShards& out) {
  if (!job.source) {
    out.write(job.outputs[0].name, 0, &job.scalar, sizeof(float));
    return;
  }
  if (!job.quantize) {
    out.write(job.outputs[0].name, 0, job.source->data, job.source->nbytes);
    return;
  }
  const std::string& weight_name = job.outputs[0].name;
  const CodeSink sink = [&](size_t offset, const void* data, size_t bytes) {
    out.write(weight_name, offset, data, bytes);
  };
  const std::vector<float> scales = options.method == QuantMethod::Int8WeightOnly
                                        ? quantize_int8_streamed(*job.source, sink)
                                        : quantize_fp8_streamed(*job.source, options.per_channel, sink);
  out.write(job.outputs[1].name, 0, scales.data(), scales.size() * sizeof(float));
  if (options.method == QuantMethod::Fp8) {
    const float input_scale = cpu::fp8_scale_for_amax(job.input_amax);
    out.write(job.outputs[2].name, 0, &input_scale, sizeof(float));
  }
}

// Runs every job on `threads` workers, largest source first (the big tensors would otherwise finish last, alone).
// The first error stops the others from starting new jobs and is rethrown here.
void run_jobs(const std::vector<Job>& jobs, const QuantizeOptions& options, const OutputShards& out) {
  std::vector<size_t> order(jobs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto bytes_of = [&](size_t i) { return jobs[i].source ? jobs[i].source->nbytes : size_t(0); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bytes_of(a) > bytes_of(b); });

  WriteProgress progress;
  for (const Job& job : jobs) {
    if (!job.source) continue;
    ++progress.tensors_total;
    progress.bytes_total += job.source->nbytes;
  }
  const auto start = std::chrono::steady_clock::now();
  std::mutex mutex;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  auto worker = [&] {
    for (size_t at = next++; at < order.size() && !failed; at = next++) {
      const Job& job = jobs[order[at]];
      try {
        run_job(job, options, out);
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!error) error = std::current_exception();
        failed = true;
        return;
      }
      if (!job.source) continue;
      std::lock_guard lock(mutex);
      ++progress.tensors_done;
      progress.bytes_done += job.source->nbytes;
      progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (options.progress) options.progress(progress);
    }
  };
  size_t threads = options.threads > 0 ? size_t(options.threads) : std::max(1u, std::thread::hardware_concurrency());
  threads = std::min(threads, std::max<size_t>(1, jobs.size()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

size_t output_bytes(const OutputTensor& t) {
  size_t bytes = dtype_size(t.dtype);
  for (int64_t d : t.shape) bytes *= size_t(d);
  return bytes;
}

}  // namespace

void require_unquantized_source(const std::string& model_dir) {
  const ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  if (config.quantization.quantized()) {
    fail("{}: the model is already quantized ({}); quantize its bf16 original", model_dir, config.quantization.format);
  }
}

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
  require_unquantized_source(model_dir);
  const ModelConfig config = ModelConfig::from_file(config_path);
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

  // Jobs in checkpoint order; a layer's k_scale / v_scale follow its v_proj so they land in its shard.
  std::vector<Job> jobs;
  for (const std::string& name : checkpoint.names()) {
    const TensorInfo& tensor = checkpoint.get(name);
    const std::string suffix = ".weight";
    const bool is_weight = name.size() > suffix.size() && name.ends_with(suffix);
    const std::string module = is_weight ? name.substr(0, name.size() - suffix.size()) : "";
    auto linear = linears.find(module);
    Job& job = jobs.emplace_back();
    job.source = &tensor;
    if (!is_weight || linear == linears.end()) {
      job.outputs = {{tensor.name, tensor.dtype, tensor.shape}};
      continue;
    }
    const auto [layer, site] = linear->second;
    job.quantize = true;
    job.input_amax = stats ? stats->layers[size_t(layer)].*site : 0.0f;
    job.outputs = linear_outputs(tensor, module, options);
    if (options.kv_cache_fp8 && module == layer_tensor_name(layer, "self_attn.v_proj")) {
      const LayerAmax& amax = stats->layers[size_t(layer)];
      for (const auto& [scale_name, value] : {std::pair{"self_attn.k_scale", amax.k}, {"self_attn.v_scale", amax.v}}) {
        Job& scalar = jobs.emplace_back();
        scalar.scalar = cpu::fp8_scale_for_amax(value);
        scalar.outputs = {{layer_tensor_name(layer, scale_name), DType::F32, {}}};
      }
    }
  }
  if (options.max_shard_bytes == 0) fail("quantize: the maximum shard size must be positive");
  std::vector<std::vector<OutputTensor>> shards(1);
  size_t shard_bytes = 0;
  for (const Job& job : jobs) {
    size_t bytes = 0;
    for (const OutputTensor& t : job.outputs) bytes += output_bytes(t);
    if (shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += bytes;
    shards.back().insert(shards.back().end(), job.outputs.begin(), job.outputs.end());
  }

  fs::create_directories(out_dir, ec);
  if (ec) fail("{}: cannot create directory: {}", out_dir, ec.message());
  OutputShards out(out_dir, shards, {{"format", "pt"}, {"quantized_by", "qed quantize"}});
  run_jobs(jobs, options, out);
  out.commit();

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
