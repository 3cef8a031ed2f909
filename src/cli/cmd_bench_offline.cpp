// qed bench offline: the engine driven directly (no HTTP) on a real checkpoint or on random weights of an HF config
// (generated on the GPU, so the 14B shape needs no 28 GB on disk). Workloads: decode_b<N>, ttft_<N>[k],
// aimo_<S>x<T>. Writes one bench JSON (shared/design.md "Formats") with provenance. With --spec, each decode and
// aimo workload runs again per drafter after its run without drafts (the baseline of its speedup, and the record an
// oracle-p<P> drafter replays), each run on a fresh engine so no prefix-cache hit favours the second.
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
#include "bench/offline/speculative_metrics.h"
#include "cli/backend_flags.h"
#include "cli/bench_command.h"
#include "cli/commands.h"
#include "cli/spec_options.h"
#include "core/error.h"
#include "engine/engine.h"
#include "model/model_config.h"
#include "spec/oracle_drafter.h"
#include "spec/synthetic_acceptance.h"

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
  std::string spec = "none";  // comma list: none | oracle-p<P> | synthetic-p<P> | ngram | redrafter:<dir>
  int spec_draft_len = 3;
  int spec_beams = 1;
  int oracle_passes = 1;  // 1: oracles replay the run without drafts; P: P - 1 speculative record passes first
  int repeats = 1;  // of every workload's runs (baseline and drafters interleaved); rows give each metric's median
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
  const std::vector<BenchSpec> specs = parse_bench_specs(opt.spec, opt.spec_draft_len, opt.spec_beams);

  if (opt.dtype != "bf16" && opt.config_path.empty())
    fail("qed bench offline: --dtype applies to --config (random weights); a checkpoint's dtype is in its config.json");
  BackendSelection selection = backend_selection(opt.backend);
  // The CPU backend can hold random weights of small shapes (qed serve's tests), but their timings mean nothing.
  if (!opt.config_path.empty() && selection.kind != "cuda")
    fail("qed bench offline: random weights (--config) need --backend cuda");
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
  // Drafters that need no record are made once; an oracle is made per workload from that workload's baseline.
  std::vector<std::shared_ptr<const spec::Drafter>> fixed_drafters;
  for (const BenchSpec& s : specs) {
    if (s.oracle_p >= 0) {
      fixed_drafters.push_back(nullptr);
    } else if (s.synthetic_p >= 0) {
      fixed_drafters.push_back(
          std::make_shared<spec::SyntheticDrafter>(s.synthetic_p, opt.spec_draft_len, vocab, opt.settings.seed));
    } else {
      if (s.options.method == "redrafter" && opt.model_dir.empty())
        fail("qed bench offline: --spec redrafter:<dir> needs --model (the head reads its token embeddings)");
      fixed_drafters.push_back(make_drafter(s.options, opt.model_dir));
    }
  }
  const auto drafter_for =
      [&](size_t i, const std::vector<spec::RecordedSequence>& records) -> std::shared_ptr<const spec::Drafter> {
    if (fixed_drafters[i]) return fixed_drafters[i];
    return std::make_shared<spec::OracleDrafter>(
        spec::OracleDrafterConfig{
            .p = specs[i].oracle_p, .draft_len = opt.spec_draft_len, .vocab_size = vocab, .seed = opt.settings.seed},
        records);
  };
  const auto fresh_engine = [&](std::shared_ptr<const spec::Drafter> drafter) {
    EngineConfig config = engine_config;
    // The one place that turns synthetic acceptance on: a cost model of speculation, never an output path.
    if (const auto* synthetic = dynamic_cast<const spec::SyntheticDrafter*>(drafter.get()))
      config.synthetic_acceptance = spec::SyntheticAcceptance{.p = synthetic->p(), .seed = opt.settings.seed};
    config.drafter = std::move(drafter);
    return std::make_unique<Engine>(*backend, std::move(config));
  };
  // What oracle i replays: the run without drafts, or, with --oracle-passes P, the output of the oracle's own
  // speculative run replaying the pass before (so its shapes, hence its logits and near-tie choices, are those of
  // a speculative run). Non-oracle drafters need none.
  const auto oracle_records = [&](size_t i, const bench::OfflineWorkload& w, const bench::OfflineSettings& settings,
                                  const bench::WorkloadRun& baseline) {
    std::vector<spec::RecordedSequence> records = baseline.sequences;
    for (int pass = 1; pass < opt.oracle_passes && specs[i].oracle_p >= 0; ++pass)
      records = bench::run_workload(*fresh_engine(drafter_for(i, records)), vocab, w, settings).sequences;
    return records;
  };

  // Warm-up outside the numbers: first-use costs (GEMM plans, module loading) of prefill and decode shapes, and of
  // the verify chunks each drafter makes.
  {
    bench::OfflineSettings warm = opt.settings;
    warm.context = 64;
    warm.decode_tokens = 4 + 2 * opt.spec_draft_len;
    const bench::OfflineWorkload warm_workload = bench::parse_workload("decode_b2", warm);
    const bench::WorkloadRun warm_baseline = bench::run_workload(*fresh_engine(nullptr), vocab, warm_workload, warm);
    for (size_t i = 0; i < specs.size(); ++i)
      bench::run_workload(*fresh_engine(drafter_for(i, warm_baseline.sequences)), vocab, warm_workload, warm);
    // A speedup compares with the baseline's decode window, in which the CUDA backend would otherwise capture the
    // decode graph of the workload's batch and context bucket (verify steps run without graphs): capture it here.
    for (const bench::OfflineWorkload& w : workloads) {
      if (specs.empty() || w.kind != bench::OfflineWorkload::Kind::Decode) continue;
      bench::OfflineSettings shape = opt.settings;
      // Enough tokens that every sequence is decoding at once: chunked prefill starts the first sequences' decode
      // ceil(batch × context / max_num_batched_tokens) steps before the last one's (3 tokens failed at b32 × 1k).
      const int64_t prompt_tokens = int64_t(w.batch) * w.prompt_tokens;
      shape.decode_tokens = 3 + 2 * int((prompt_tokens + engine_config.scheduler.max_num_batched_tokens - 1) /
                                        engine_config.scheduler.max_num_batched_tokens);
      bench::run_workload(*fresh_engine(nullptr), vocab, bench::parse_workload(w.name, shape), shape);
    }
  }

  std::string precision = selection.kind == "cuda" ? opt.dtype : "fp32";
  const QuantizationConfig& quantization = backend->config().quantization;
  if (quantization.quantized()) precision = quantization.method == QuantMethod::Fp8 ? "fp8" : "int8_wo";
  nlohmann::json results = nlohmann::json::array();
  const auto add_rows = [&](const bench::OfflineWorkload& w, const std::string& spec_label,
                            const std::vector<bench::Metric>& metrics) {
    for (const bench::Metric& m : metrics) {
      fmt::print("{:<16} {:<14} {:<30} {:>12.3f}\n", w.name, spec_label, m.metric, m.value);
      // backend: "cuda", "cpu"; "cuda-tp2" with --tensor-parallel-size 2
      nlohmann::json row = {
          {"engine", "qed"},    {"backend", backend->name()}, {"model", model_name}, {"precision", precision},
          {"spec", spec_label}, {"workload", w.name},         {"metric", m.metric},  {"value", m.value}};
      if (spec_label != "none") {
        row["draft_len"] = opt.spec_draft_len;
        row["beams"] = opt.spec_beams;
      }
      if (opt.repeats > 1) row["repeats"] = opt.repeats;
      results.push_back(std::move(row));
    }
  };
  for (const bench::OfflineWorkload& w : workloads) {
    // Repeats interleave the baseline and every drafter, so drift in the machine's speed (a shared CPU, clocks)
    // hits all of them alike; each speedup pairs a run with the baseline of its own repeat.
    std::vector<std::vector<bench::Metric>> baseline_metrics;
    std::vector<std::vector<std::vector<bench::Metric>>> spec_metrics(specs.size());
    std::vector<std::vector<spec::RecordedSequence>> records(specs.size());  // made in the first repeat
    for (int repeat = 0; repeat < opt.repeats; ++repeat) {
      const bench::WorkloadRun baseline = bench::run_workload(*fresh_engine(nullptr), vocab, w, opt.settings);
      baseline_metrics.push_back(baseline.metrics);
      if (w.kind == bench::OfflineWorkload::Kind::Ttft) continue;  // one token: nothing to draft
      for (size_t i = 0; i < specs.size(); ++i) {
        if (repeat == 0) records[i] = oracle_records(i, w, opt.settings, baseline);
        const std::shared_ptr<const spec::Drafter> drafter = drafter_for(i, records[i]);
        const std::unique_ptr<Engine> engine = fresh_engine(drafter);
        const bench::WorkloadRun run = bench::run_workload(*engine, vocab, w, opt.settings);
        std::vector<bench::Metric> metrics = run.metrics;
        for (bench::Metric& m : bench::speculative_metrics(w, baseline, run, engine->stats())) metrics.push_back(m);
        if (const auto* oracle = dynamic_cast<const spec::OracleDrafter*>(drafter.get()))
          metrics.push_back({"oracle_proposals_without_truth", static_cast<double>(oracle->counters().without_truth)});
        spec_metrics[i].push_back(std::move(metrics));
      }
    }
    add_rows(w, "none", bench::median_metrics(baseline_metrics));
    for (size_t i = 0; i < specs.size() && w.kind != bench::OfflineWorkload::Kind::Ttft; ++i)
      add_rows(w, specs[i].label, bench::median_metrics(spec_metrics[i]));
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
  cmd->add_option("--aimo-temperature", opt->settings.aimo_temperature,
                  "Sampling temperature of aimo_* (0 = greedy; random weights give near-flat distributions, where "
                  "any bf16 difference changes a sampled token, so oracle drafts need 0 there)")
      ->check(CLI::Range(0.0f, 100.0f))
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
  cmd->add_option("--spec", opt->spec,
                  "Comma list of drafters, each run after the same workload without drafts: none, oracle-p<P> "
                  "(right with probability P, a sweep: oracle-p0.4,oracle-p0.6), synthetic-p<P> (each draft position "
                  "accepted by a seeded coin of probability P: the cost at that acceptance on random weights; "
                  "outputs are not the model's), ngram, redrafter:<dir>")
      ->capture_default_str();
  cmd->add_option("--spec-draft-len", opt->spec_draft_len, "Draft tokens per step (per beam)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--spec-beams", opt->spec_beams, "Beams per step (redrafter)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--oracle-passes", opt->oracle_passes,
                  "oracle-p<P>: replay the run without drafts (1), or the output of the oracle's previous "
                  "speculative run, made this many times minus one first (where bf16 near-ties split runs)")
      ->check(CLI::Range(1, 10))
      ->capture_default_str();
  cmd->add_option("--repeats", opt->repeats,
                  "Run each workload (and each drafter after it) this many times, interleaved; report medians")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--output", opt->output, "Write the bench JSON here");
  add_backend_flags(cmd, opt->backend);
  cmd->callback([opt] { run_bench_offline(*opt); });
}

}  // namespace qed::cli
