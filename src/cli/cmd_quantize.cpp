// qed quantize: a bf16 HF checkpoint → FP8 E4M3 (static activation scales from a calibration run on the CUDA or
// CPU backend) or int8 weight-only, written in the layout vLLM loads. docs/quantize.md describes the format.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
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
  std::string backend;  // "" = cuda when built with it and a GPU is visible, else cpu
  double max_shard_gb = 5.0;
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

std::string format_bytes(size_t bytes) {
  return bytes >= size_t(1e9) ? fmt::format("{:.2f} GB", double(bytes) / 1e9)
                              : fmt::format("{:.1f} MB", double(bytes) / 1e6);
}

// Redrawn at most every 0.2 s (a 14B model has ~340 tensors, a fixture ~30), and once at the end.
class WriteProgressBar {
 public:
  void operator()(const quant::WriteProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    const bool last = p.tensors_done == p.tensors_total;
    if (!last && drawn_ && now - last_draw_ < std::chrono::milliseconds(200)) return;
    drawn_ = true;
    last_draw_ = now;
    constexpr int kWidth = 30;
    const int filled = p.bytes_total > 0 ? int(double(p.bytes_done) / double(p.bytes_total) * kWidth) : kWidth;
    fmt::print(stderr, "\rquantizing  [{:=<{}}{:<{}}] {}/{} tensors, {} of {}, {:.1f} s", "", filled, "",
               kWidth - filled, p.tensors_done, p.tensors_total, format_bytes(p.bytes_done),
               format_bytes(p.bytes_total), p.seconds);
    if (last) fmt::print(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_;
};

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
  if (opt.threads < 0) fail("--threads must be >= 0, got {}", opt.threads);
  options.threads = opt.threads;
  if (!(opt.max_shard_gb > 0)) fail("--max-shard-size must be positive (GB), got {}", opt.max_shard_gb);
  options.max_shard_bytes = size_t(opt.max_shard_gb * 1e9);
  if (!opt.backend.empty() && opt.backend != "cpu" && opt.backend != "cuda")
    fail("--backend must be cpu or cuda, got '{}'", opt.backend);
  if (!opt.quiet) options.progress = WriteProgressBar();

  quant::require_unquantized_source(opt.model);  // before a calibration that would be thrown away
  std::unique_ptr<quant::CalibrationStats> stats;
  if (options.method == QuantMethod::Fp8 || options.kv_cache_fp8) {
    if (opt.calib.path.empty()) opt.calib.path = default_calibration_dir();
    const auto samples = quant::load_calibration_samples(opt.calib, opt.model);
    quant::CalibrationBackend backend{opt.backend, opt.threads, 0};
    if (backend.kind.empty()) backend.kind = quant::default_calibration_backend();
    if (!opt.quiet) {
      fmt::print(stderr, "calibrating on the {} backend{} ({} samples from {})\n", backend.kind,
                 opt.backend.empty() ? " (the default)" : "", samples.size(), opt.calib.path);
    }
    const auto start = std::chrono::steady_clock::now();
    stats = std::make_unique<quant::CalibrationStats>(
        quant::calibrate_model(opt.model, samples, backend, opt.quiet ? quant::CalibrationProgress{} : print_progress));
    if (!opt.quiet) {
      fmt::print(stderr, "calibrated in {:.1f} s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
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
  cmd->add_option("--backend", opt->backend,
                  "Calibration backend: cuda | cpu (default: cuda when this qed has it and a GPU is visible)");
  cmd->add_option("--threads", opt->threads, "CPU threads for quantizing and CPU calibration (0 = all)")
      ->capture_default_str();
  cmd->add_option("--max-shard-size", opt->max_shard_gb, "Output safetensors files of at most this many GB")
      ->capture_default_str();
  cmd->add_flag("--quiet", opt->quiet, "No progress bar");
  cmd->callback([opt] { run_quantize(*opt); });
}

}  // namespace qed::cli
