// qed bench offline: the engine driven directly (no HTTP) on a real checkpoint or on random weights of an HF config
// (generated on the GPU, so the 14B shape needs no 28 GB on disk). Workloads: decode_b<N>, ttft_<N>[k],
// aimo_<S>x<T>. Writes one bench JSON (shared/design.md "Formats") with provenance.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "backend/factory/backend_factory.h"
#include "bench/offline/offline_workloads.h"
#include "cli/backend_flags.h"
#include "cli/bench_command.h"
#include "cli/commands.h"
#include "core/error.h"
#include "engine/engine.h"
#include "model/model_config.h"

namespace qed::cli {
namespace {

struct BenchOfflineOptions {
  std::string model_dir;
  std::string config_path;     // random weights of this HF config.json instead of a checkpoint
  std::string dtype = "bf16";  // of the random weights: bf16 | fp8 | int8_wo
  std::string model_name;
  std::string workloads = "decode_b1,decode_b8,decode_b32,ttft_1k,ttft_8k,aimo_12x4500";
  std::string output;
  int max_num_seqs = 64;
  int max_num_batched_tokens = 8192;
  BackendFlags backend;
  bench::OfflineSettings settings;
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

void run_bench_offline(const BenchOfflineOptions& opt) {
  if (opt.model_dir.empty() == opt.config_path.empty())
    fail("qed bench offline: give exactly one of --model, --config");
  std::vector<bench::OfflineWorkload> workloads;
  for (const std::string& name : split_commas(opt.workloads))
    workloads.push_back(bench::parse_workload(name, opt.settings));
  if (workloads.empty()) fail("qed bench offline: --workloads names no workload");

  if (opt.dtype != "bf16" && opt.config_path.empty())
    fail("qed bench offline: --dtype applies to --config (random weights); a checkpoint's dtype is in its config.json");
  BackendSelection selection = backend_selection(opt.backend);
  selection.random_dtype = opt.dtype;
  EngineConfig engine_config;
  engine_config.scheduler.max_num_seqs = opt.max_num_seqs;
  engine_config.scheduler.max_num_batched_tokens = std::max(opt.max_num_batched_tokens, opt.max_num_seqs);
  selection.max_batched_tokens = engine_config.scheduler.max_num_batched_tokens;
  std::unique_ptr<Backend> backend;
  std::string model_name = opt.model_name;
  if (!opt.config_path.empty()) {
    const ModelConfig config = ModelConfig::from_file(opt.config_path);
    backend = make_random_backend(config, opt.settings.seed, selection);
    // bench/configs/<name>/config.json: results name the shape ("qwen2.5-14b-shape"), as the Formats schema does.
    if (model_name.empty()) model_name = std::filesystem::path(opt.config_path).parent_path().filename().string();
  } else {
    backend = make_backend(opt.model_dir, selection);
    if (model_name.empty()) model_name = std::filesystem::path(opt.model_dir).lexically_normal().filename().string();
  }
  const int vocab = backend->config().vocab_size;
  for (const bench::OfflineWorkload& w : workloads) {
    const int needed = w.prompt_tokens + w.generate_tokens;
    const int limit = backend->config().max_position_embeddings;
    if (limit > 0 && needed > limit)
      fail("qed bench offline: {} needs {} positions, the model has {}", w.name, needed, limit);
  }
  Engine engine(*backend, engine_config);

  // Warm-up outside the numbers: first-use costs (GEMM plans, module loading) of prefill and decode shapes.
  {
    bench::OfflineSettings warm = opt.settings;
    warm.context = 64;
    warm.decode_tokens = 4;
    bench::run_workload(engine, vocab, bench::parse_workload("decode_b2", warm), warm);
  }

  std::string precision = selection.kind == "cuda" ? opt.dtype : "fp32";
  const QuantizationConfig& quantization = backend->config().quantization;
  if (quantization.quantized()) precision = quantization.method == QuantMethod::Fp8 ? "fp8" : "int8_wo";
  nlohmann::json results = nlohmann::json::array();
  for (const bench::OfflineWorkload& w : workloads) {
    for (const bench::Metric& m : bench::run_workload(engine, vocab, w, opt.settings)) {
      fmt::print("{:<16} {:<22} {:>12.3f}\n", w.name, m.metric, m.value);
      results.push_back({{"engine", "qed"},
                         {"backend", backend->name()},  // "cuda", "cpu"; "cuda-tp2" with --tensor-parallel-size 2
                         {"model", model_name},
                         {"precision", precision},
                         {"spec", "none"},
                         {"workload", w.name},
                         {"metric", m.metric},
                         {"value", m.value}});
    }
  }
  // How many tokens of KV the backend holds (at --gpu-memory-fraction on CUDA): an FP8 cache holds twice bf16's.
  const KvCacheLayout kv = backend->kv_layout();
  const double kv_tokens = double(kv.num_blocks) * double(kv.block_size);
  fmt::print("{:<16} {:<22} {:>12.0f}  ({} cache)\n", "kv_cache", "kv_capacity_tokens", kv_tokens,
             backend->kv_cache_dtype());
  results.push_back({{"engine", "qed"},
                     {"backend", backend->name()},
                     {"model", model_name},
                     {"precision", precision},
                     {"spec", "none"},
                     {"workload", "kv_cache"},
                     {"metric", "kv_capacity_tokens"},
                     {"kv_cache_dtype", backend->kv_cache_dtype()},
                     {"value", kv_tokens}});
  const BackendDevice device = describe_backend_device(selection);
  const nlohmann::json out = {{"provenance", bench_provenance(device.device, device.driver, device.cuda)},
                              {"results", results}};
  if (!opt.output.empty()) write_bench_json(opt.output, out);
}

}  // namespace

void register_bench_offline(CLI::App& app) {
  auto opt = std::make_shared<BenchOfflineOptions>();
  auto* cmd = bench_command(app)->add_subcommand(
      "offline", "Engine-direct throughput/latency: decode batches, prefill TTFT, the AIMO 12x4500 workload");
  cmd->add_option("--model", opt->model_dir, "Model directory (config.json + safetensors)");
  cmd->add_option("--config", opt->config_path, "HF config.json: random weights of that shape, made on the GPU");
  cmd->add_option("--dtype", opt->dtype, "With --config: random weights in bf16, fp8 (W8A8) or int8_wo")
      ->check(CLI::IsMember({"bf16", "fp8", "int8_wo"}))
      ->capture_default_str();
  cmd->add_option("--model-name", opt->model_name, "Name in the results (default: the directory's)");
  cmd->add_option("--workloads", opt->workloads, "Comma list: decode_b<N>, ttft_<N>[k], aimo_<S>x<T>")
      ->capture_default_str();
  cmd->add_option("--context", opt->settings.context, "Prompt tokens of each decode_b* sequence")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--decode-tokens", opt->settings.decode_tokens, "Tokens each decode_b* sequence generates")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--aimo-prompt-tokens", opt->settings.aimo_prompt_tokens, "Prompt tokens of aimo_*")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--ttft-repeats", opt->settings.ttft_repeats, "ttft_* reports the median of this many")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--seed", opt->settings.seed, "Seeds random weights, prompts and sampling")->capture_default_str();
  cmd->add_option("--max-num-seqs", opt->max_num_seqs, "Sequences per engine step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", opt->max_num_batched_tokens, "Tokens per engine step (prefill chunk)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--output", opt->output, "Write the bench JSON here");
  add_backend_flags(cmd, opt->backend);
  cmd->callback([opt] { run_bench_offline(*opt); });
}

}  // namespace qed::cli
