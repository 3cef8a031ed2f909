// qed quantize: a bf16 HF checkpoint → FP8 E4M3 (static activation scales from a calibration run on the CPU
// backend) or int8 weight-only, written in the layout vLLM loads. docs/quantize.md describes the format.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "quant/calibration.h"
#include "quant/quantized_checkpoint.h"

namespace qed::cli {
namespace {

struct QuantizeCliOptions {
  std::string model;
  std::string out;
  std::string dtype;
  std::string kv_cache = "auto";
  bool per_channel = false;
  bool quiet = false;
  int threads = 0;
  quant::CalibrationData calib{"", 64, 512};
};

// The math sets shipped beside the checkout (../shared/data/math), looked for from the working directory up.
std::string default_calibration_dir() {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::path dir = fs::current_path(ec); !dir.empty(); dir = dir.parent_path()) {
    for (const char* candidate : {"shared/data/math", "../shared/data/math"}) {
      if (fs::is_directory(dir / candidate, ec)) return (dir / candidate).lexically_normal().string();
    }
    if (dir == dir.parent_path()) break;
  }
  fail("no calibration data: ../shared/data/math not found from the working directory; pass --calib data.jsonl");
}

void print_progress(int done, int total, int64_t tokens) {
  constexpr int kWidth = 30;
  const int filled = total > 0 ? done * kWidth / total : kWidth;
  fmt::print(stderr, "\rcalibrating [{:=<{}}{:<{}}] {}/{} samples, {} tokens", "", filled, "", kWidth - filled, done,
             total, tokens);
  if (done == total) fmt::print(stderr, "\n");
  std::fflush(stderr);
}

void run_quantize(QuantizeCliOptions opt) {
  quant::QuantizeOptions options;
  if (opt.dtype == "fp8") {
    options.method = QuantMethod::Fp8;
  } else if (opt.dtype == "int8_wo") {
    options.method = QuantMethod::Int8WeightOnly;
    if (opt.per_channel) fail("--per-channel applies to fp8 (int8_wo scales are always per channel)");
  } else {
    fail("--dtype must be fp8 or int8_wo, got '{}'", opt.dtype);
  }
  options.per_channel = opt.per_channel;
  if (opt.kv_cache != "auto" && opt.kv_cache != "fp8") fail("--kv-cache must be auto or fp8, got '{}'", opt.kv_cache);
  options.kv_cache_fp8 = opt.kv_cache == "fp8";

  std::unique_ptr<quant::CalibrationStats> stats;
  if (options.method == QuantMethod::Fp8 || options.kv_cache_fp8) {
    if (opt.calib.path.empty()) opt.calib.path = default_calibration_dir();
    const ModelConfig config = ModelConfig::from_file(opt.model + "/config.json");
    const auto samples = quant::load_calibration_samples(opt.calib, opt.model);
    size_t longest = 0;
    for (const auto& s : samples) longest = std::max(longest, s.size());
    CpuBackendOptions backend_options;
    backend_options.num_threads = opt.threads;
    backend_options.num_blocks = int((longest + size_t(backend_options.block_size) - 1) / backend_options.block_size);
    CpuBackend backend(config, Checkpoint::open(opt.model), backend_options);
    stats = std::make_unique<quant::CalibrationStats>(
        quant::calibrate(backend, samples, opt.quiet ? std::function<void(int, int, int64_t)>{} : print_progress));
  }
  quant::write_quantized_checkpoint(opt.model, opt.out, options, stats.get());
  if (!opt.quiet) fmt::print(stderr, "wrote {} ({})\n", opt.out, opt.dtype);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto opt = std::make_shared<QuantizeCliOptions>();
  auto* cmd = app.add_subcommand("quantize", "Quantize a bf16 checkpoint to FP8 (calibrated) or int8 weight-only");
  cmd->add_option("--model", opt->model, "bf16 model directory (config.json, *.safetensors)")->required();
  cmd->add_option("--out", opt->out, "Output model directory")->required();
  cmd->add_option("--dtype", opt->dtype, "fp8 | int8_wo")->required();
  cmd->add_option("--calib", opt->calib.path,
                  "Calibration jsonl file or directory (rows with text, problem[+solution] or input_ids); default "
                  "../shared/data/math");
  cmd->add_option("--calib-samples", opt->calib.samples, "Calibration samples")->capture_default_str();
  cmd->add_option("--calib-seq-len", opt->calib.seq_len, "Tokens per calibration sample at most")
      ->capture_default_str();
  cmd->add_option("--kv-cache", opt->kv_cache, "fp8: also write k_scale/v_scale for an FP8 KV cache")
      ->capture_default_str();
  cmd->add_flag("--per-channel", opt->per_channel, "FP8 weight scales per output channel (default per tensor)");
  cmd->add_option("--threads", opt->threads, "CPU threads for calibration (0 = all)")->capture_default_str();
  cmd->add_flag("--quiet", opt->quiet, "No progress bar");
  cmd->callback([opt] { run_quantize(*opt); });
}

}  // namespace qed::cli
