// qed bench serve: load an OpenAI-compatible server (qed serve, vLLM, ...) with streamed requests and report what
// vLLM's benchmark_serving reports (TTFT, TPOT, ITL, E2EL percentiles; throughputs), or run the AIMO preset. Writes
// one bench JSON (docs: shared/design.md "Formats") with provenance.
#include <fmt/format.h>
#include <sys/utsname.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "bench/serve_load.h"
#include "bench/serve_workloads.h"
#include "cli/bench_command.h"
#include "cli/commands.h"
#include "core/error.h"
#include "server/http/http_client.h"

namespace qed::cli {
namespace {

using nlohmann::json;

struct BenchServeOptions {
  std::string url = "http://127.0.0.1:8000";
  std::string api_key;
  std::string model;  // empty: the first id of /v1/models
  std::string endpoint = "completions";
  std::string dataset = "random";
  int random_words = 32;
  int concurrency = 8;
  int requests = 32;
  double request_rate = std::numeric_limits<double>::infinity();
  int max_tokens = 128;
  double temperature = 0;
  bool ignore_eos = false;
  std::optional<uint64_t> seed;
  double timeout_s = 600;
  std::string preset;  // "" or "aimo"
  std::string problem;
  bool tir = true;
  std::string output;
  std::string device;
  std::string precision = "fp32";
  std::string merge_into;  // append this run to a bench JSON holding the session's other runs
  std::string note;        // free text kept in the JSON (what the run could not do, e.g. no sandbox on the device)
  // Which flags were given: with --preset they override the preset's values (and the JSON says so).
  bool max_tokens_given = false;
  bool temperature_given = false;
};

// The preset's request fields after the flags that override them; `overrides` records each one given.
bench::AimoPreset aimo_preset(const BenchServeOptions& opt, json& overrides) {
  bench::AimoPreset preset;
  overrides = json::object();
  if (opt.max_tokens_given) {
    if (opt.max_tokens < 1) fail("--max-tokens must be >= 1, got {}", opt.max_tokens);
    preset.max_tokens = opt.max_tokens;
    overrides["max_tokens"] = opt.max_tokens;
  }
  if (opt.temperature_given) {
    if (!(opt.temperature >= 0)) fail("--temperature must be >= 0");
    preset.temperature = opt.temperature;
    overrides["temperature"] = opt.temperature;
  }
  if (opt.ignore_eos) {
    preset.ignore_eos = true;
    overrides["ignore_eos"] = true;
  }
  if (!opt.tir) {
    preset.tir = false;
    overrides["tir"] = false;
  }
  return preset;
}

// The notebook's values the preset starts from, so a reader of the JSON sees what an override replaced.
json aimo_notebook_values() {
  const bench::AimoPreset p;
  return {{"samples", p.samples},
          {"keep_first", p.keep_first},
          {"max_tokens", p.max_tokens},
          {"temperature", p.temperature},
          {"tir", p.tir},
          {"max_code_executions", p.max_code_executions},
          {"ignore_eos", p.ignore_eos}};
}

struct Url {
  std::string host;
  uint16_t port = 80;
};

Url parse_url(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) fail("--url {}: only http://host:port is supported", url);
  std::string rest = url.substr(kScheme.size());
  if (auto slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  Url out;
  const auto colon = rest.rfind(':');
  out.host = rest.substr(0, colon);
  if (colon != std::string::npos) {
    const std::string port = rest.substr(colon + 1);
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 1 || p > 65535) fail("--url {}: bad port '{}'", url, port);
    out.port = static_cast<uint16_t>(p);
  }
  if (out.host.empty()) fail("--url {}: no host", url);
  return out;
}

std::string utc_now_compact() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string default_device() {
  utsname u{};
  uname(&u);
  return fmt::format("server at {{url}}; client on {} ({})", u.machine, u.nodename);
}

json server_models(http::HttpClient& client, const std::string& api_key) {
  http::Headers headers;
  if (!api_key.empty()) headers.emplace_back("Authorization", "Bearer " + api_key);
  const auto r = client.request("GET", "/v1/models", "", headers);
  if (r.status != 200) fail("GET /v1/models answered {}: {}", r.status, r.body.substr(0, 200));
  const json body = r.json();
  if (!body.contains("data") || !body["data"].is_array() || body["data"].empty()) {
    fail("GET /v1/models lists no model");
  }
  return body["data"][0];
}

void add_metric(json& results, const json& base, const std::string& metric, double value) {
  json row = base;
  row["metric"] = metric;
  row["value"] = value;
  results.push_back(std::move(row));
}

// Several runs against one server in one bench JSON (as design.md keeps a session's runs and peers together):
// results appended, each run's details under its workload name, each run's provenance in "runs"; the document's
// provenance is the first run's.
void merge_bench_json(const std::string& path, const json& run, const std::string& workload) {
  json doc;
  if (std::filesystem::exists(path)) {
    std::ifstream in(path);
    doc = json::parse(in, nullptr, false);
    const bool merged = !doc.is_discarded() && doc.is_object() && doc.contains("results") &&
                        doc["results"].is_array() && doc.contains("details") && doc["details"].is_object() &&
                        doc.contains("runs") && doc["runs"].is_array();
    if (!merged) fail("--merge-into {}: not a bench JSON that --merge-into wrote", path);
  } else {
    doc = {{"provenance", run["provenance"]},
           {"results", json::array()},
           {"details", json::object()},
           {"runs", json::array()}};
  }
  for (const json& row : run["results"]) doc["results"].push_back(row);
  std::string key = workload;
  for (int i = 2; doc["details"].contains(key); ++i) key = fmt::format("{}#{}", workload, i);
  doc["details"][key] = run["details"];
  json provenance = run["provenance"];
  provenance["workload"] = key;
  doc["runs"].push_back(std::move(provenance));
  write_bench_json(path, doc);
}

void run_bench_serve(const BenchServeOptions& opt) {
  if (opt.concurrency < 1) fail("--concurrency must be >= 1");
  if (opt.requests < 1) fail("--requests must be >= 1");
  if (!(opt.request_rate > 0)) fail("--request-rate must be > 0 (inf = all at once)");
  if (opt.endpoint != "completions" && opt.endpoint != "chat") fail("--endpoint is completions or chat");
  if (!opt.preset.empty() && opt.preset != "aimo") fail("--preset: only 'aimo' exists");
  const Url url = parse_url(opt.url);
  http::HttpClient client(url.host, url.port, std::chrono::seconds(30));
  const json card = server_models(client, opt.api_key);
  const std::string model = opt.model.empty() ? card.value("id", std::string()) : opt.model;
  const int max_model_len = card.value("max_model_len", 0);

  bench::LoadConfig load;
  load.host = url.host;
  load.port = url.port;
  load.api_key = opt.api_key;
  load.concurrency = opt.concurrency;
  load.request_rate = opt.request_rate;
  load.seed = opt.seed.value_or(0);
  load.timeout_s = opt.timeout_s;

  json base = {{"engine", "qed"}, {"model", model}, {"precision", opt.precision}, {"spec", "none"}};
  json results = json::array();
  json details;
  if (opt.preset == "aimo") {
    json overrides;
    bench::AimoPreset preset = aimo_preset(opt, overrides);
    if (!opt.problem.empty()) {
      preset.problem = opt.problem;
    } else if (opt.dataset != "random") {
      std::ifstream in(opt.dataset);
      std::string line;
      if (!in || !std::getline(in, line)) fail("{}: cannot read a problem", opt.dataset);
      const json row = json::parse(line, nullptr, false);
      if (row.is_discarded() || !row.contains("problem") || !row["problem"].is_string()) {
        fail("{}:1: no string 'problem'", opt.dataset);
      }
      preset.problem = row["problem"].get<std::string>();
    } else {
      fail("--preset aimo needs --problem TEXT or a --dataset jsonl with 'problem' rows");
    }
    preset.group = "aimo-" + utc_now_compact() + "-" + std::to_string(std::random_device{}());
    // Up to 20000 tokens (or --max-tokens), as far as the server's context allows after the prompt (the notebook's
    // 14B has 32k+).
    int max_tokens = preset.max_tokens;
    if (max_model_len > 0) {
      const json tok_body = {
          {"model", model},
          {"messages", json::array({{{"role", "user"}, {"content", bench::generic_math_prompt(preset.problem)}}})}};
      http::Headers headers;
      if (!opt.api_key.empty()) headers.emplace_back("Authorization", "Bearer " + opt.api_key);
      const auto r = client.post_json("/tokenize", tok_body, headers);
      if (r.status != 200) fail("POST /tokenize answered {}: {}", r.status, r.body.substr(0, 200));
      max_tokens = std::min(max_tokens, max_model_len - r.json().value("count", 0));
      if (max_tokens < 1) fail("the problem fills the server's context of {} tokens", max_model_len);
    }
    load.concurrency = preset.samples;  // all 12 at once, as the notebook's parallel generations
    const bench::LoadResult result = bench::run_load(load, bench::make_aimo_requests(preset, model, max_tokens));
    details = bench::summarize_aimo(result);
    details["max_tokens"] = max_tokens;
    if (max_tokens < preset.max_tokens) details["max_tokens_clamped_from"] = preset.max_tokens;
    details["tir"] = preset.tir;
    details["ignore_eos"] = preset.ignore_eos;
    details["temperature"] = preset.temperature;
    details["preset"] = {{"name", "aimo"}, {"notebook", aimo_notebook_values()}, {"overrides", overrides}};
    details["problem"] = preset.problem;
    base["workload"] = fmt::format("aimo_{}x{}_keep{}", preset.samples, max_tokens, preset.keep_first);
    add_metric(results, base, "generations", details["generations"].get<double>());
    add_metric(results, base, "total_s", details["total_s"].get<double>());
    add_metric(results, base, "batch_tok_per_s", details["batch_tok_per_s"].get<double>());
    add_metric(results, base, "per_sample_tok_per_s", details["per_request_tok_per_s_mean"].get<double>());
    add_metric(results, base, "per_sample_tok_per_s_std", details["per_request_tok_per_s_std"].get<double>());
    fmt::print(
        "aimo preset: {} generations ({} cut, {} failed) in {:.2f} s; batch {:.1f} tok/s; per request "
        "{:.1f} ± {:.1f} tok/s; majority answer {}\n",
        details["generations"].get<int>(), details["cut"].get<int>(), details["failed"].get<int>(),
        details["total_s"].get<double>(), details["batch_tok_per_s"].get<double>(),
        details["per_request_tok_per_s_mean"].get<double>(), details["per_request_tok_per_s_std"].get<double>(),
        details["majority_answer"].dump());
  } else {
    bench::PromptSource source{opt.dataset, opt.random_words, opt.seed.value_or(0)};
    bench::RequestShape shape{opt.endpoint == "chat", model, opt.max_tokens, opt.temperature, opt.ignore_eos, opt.seed};
    const auto requests = bench::make_requests(bench::load_prompts(source, opt.requests), shape);
    const bench::LoadResult result = bench::run_load(load, requests);
    details = bench::summarize(result);
    const std::string data = opt.dataset == "random" ? fmt::format("random{}w", opt.random_words)
                                                     : std::filesystem::path(opt.dataset).stem().string();
    base["workload"] = fmt::format("serve_{}_c{}_n{}_{}tok", data, opt.concurrency, opt.requests, opt.max_tokens);
    add_metric(results, base, "request_per_s", details["request_throughput"].get<double>());
    add_metric(results, base, "output_tok_per_s", details["output_throughput"].get<double>());
    add_metric(results, base, "total_tok_per_s", details["total_token_throughput"].get<double>());
    for (const char* m : {"ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"}) {
      for (const char* s : {"mean", "median", "p90", "p99"}) {
        add_metric(results, base, fmt::format("{}_{}", m, s == std::string("median") ? "p50" : s),
                   details[m][s].get<double>());
      }
    }
    fmt::print("{} ok, {} failed in {:.2f} s: {:.2f} req/s, {:.1f} output tok/s\n", details["completed"].get<int>(),
               details["failed"].get<int>(), details["duration_s"].get<double>(),
               details["request_throughput"].get<double>(), details["output_throughput"].get<double>());
    for (const char* m : {"ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"}) {
      fmt::print("  {:8} mean {:9.2f}  p50 {:9.2f}  p90 {:9.2f}  p99 {:9.2f}\n", m, details[m]["mean"].get<double>(),
                 details[m]["median"].get<double>(), details[m]["p90"].get<double>(), details[m]["p99"].get<double>());
    }
    for (const auto& e : details["errors"]) fmt::print("  error: {}\n", e.get<std::string>());
    if (details["completed"].get<int>() == 0) fail("all {} requests failed", opt.requests);
  }

  if (!opt.note.empty()) details["note"] = opt.note;
  std::string device = opt.device.empty() ? default_device() : opt.device;
  if (auto at = device.find("{url}"); at != std::string::npos) device.replace(at, 5, opt.url);
  const json out = {
      {"provenance", bench_provenance(device, nullptr, nullptr)}, {"results", results}, {"details", details}};
  if (!opt.output.empty()) write_bench_json(opt.output, out);
  if (!opt.merge_into.empty()) merge_bench_json(opt.merge_into, out, base["workload"].get<std::string>());
}

}  // namespace

void register_bench_serve(CLI::App& app) {
  auto opt = std::make_shared<BenchServeOptions>();
  auto* cmd = bench_command(app)->add_subcommand(
      "serve", "Load an OpenAI-compatible server with streamed requests: TTFT/TPOT/ITL/E2EL percentiles, throughput");
  cmd->add_option("--url", opt->url, "Server base URL (http://host:port)")->capture_default_str();
  cmd->add_option("--api-key", opt->api_key, "Sent as 'Authorization: Bearer KEY'");
  cmd->add_option("--model", opt->model, "Model id to request (default: the server's first in /v1/models)");
  cmd->add_option("--endpoint", opt->endpoint, "completions or chat")->capture_default_str();
  cmd->add_option("--dataset", opt->dataset, "'random' or a .jsonl with 'prompt' or 'problem' rows")
      ->capture_default_str();
  cmd->add_option("--random-words", opt->random_words, "Prompt length of the random dataset, in words")
      ->capture_default_str();
  cmd->add_option("--concurrency", opt->concurrency, "Requests in flight at most")->capture_default_str();
  cmd->add_option("--requests", opt->requests, "Number of requests")->capture_default_str();
  cmd->add_option("--request-rate", opt->request_rate, "Requests per second, Poisson arrivals (default inf)");
  cmd->add_option("--max-tokens", opt->max_tokens, "max_tokens per request (with --preset: overrides its 20000)")
      ->capture_default_str();
  cmd->add_option("--temperature", opt->temperature, "Sampling temperature (with --preset: overrides its 0.7)")
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", opt->ignore_eos,
                "Generate exactly max_tokens (vLLM's ignore_eos; with --preset: an override, recorded)");
  cmd->add_option("--seed", opt->seed, "Request i gets seed + i; also seeds the random prompts and arrivals");
  cmd->add_option("--timeout-s", opt->timeout_s, "Per connect/read step")->capture_default_str();
  cmd->add_option("--preset", opt->preset,
                  "aimo: one problem, 12 samples (seeds 0-11), temperature 0.7, up to 20000 tokens, code execution "
                  "(at most 2 calls), stop after the first 10 finish");
  cmd->add_option("--problem", opt->problem, "aimo: the problem text (default: the first row of --dataset)");
  cmd->add_option("--tir", opt->tir, "aimo: ask for server-side code execution (qed.tir)")->capture_default_str();
  cmd->add_option("--output", opt->output, "Write the bench JSON here (bench/results/...)");
  cmd->add_option("--device", opt->device, "Provenance: the device the server runs on");
  cmd->add_option("--precision", opt->precision, "Result label: the server's precision")->capture_default_str();
  cmd->add_option("--merge-into", opt->merge_into,
                  "Append this run to a bench JSON (created if absent): results added, details under the workload");
  cmd->add_option("--note", opt->note, "Free text kept in the JSON's details (e.g. why tool calls were off)");
  cmd->callback([opt, cmd] {
    opt->max_tokens_given = cmd->count("--max-tokens") > 0;
    opt->temperature_given = cmd->count("--temperature") > 0;
    run_bench_serve(*opt);
  });
}

}  // namespace qed::cli
