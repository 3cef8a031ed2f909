// qed eval: evaluate a model behind an OpenAI-compatible server on a math dataset (resumable results file),
// grade answers on their own (`qed eval grade`) and summarize results (`qed eval summarize`).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "eval/answer_grader.h"
#include "eval/eval_runner.h"
#include "eval/jsonl_file.h"
#include "eval/metrics.h"

namespace qed::cli {

namespace {

std::optional<std::string> text_or_null(const nlohmann::json& row, const char* key, const char* alias) {
  for (const char* k : {key, alias}) {
    if (!row.contains(k)) continue;
    const auto& v = row[k];
    if (v.is_null()) return std::nullopt;
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number()) return v.dump();
    fail("'{}' must be a string, a number or null", k);
  }
  return std::nullopt;
}

void write_json_file(const std::string& path, const nlohmann::json& value) {
  std::ofstream out(path);
  if (!out) fail("{}: cannot write", path);
  out << value.dump(2) << "\n";
  if (!out) fail("{}: write failed", path);
}

// Each row's `pred` (or `predicted_answer`) against its `ref` (or `expected_answer`); every row comes back with
// `correct` added. A `pred` holding a whole generation is graded by its last \boxed{}.
void grade_file(const std::string& input, const std::string& output, const eval::GradeOptions& options) {
  std::vector<nlohmann::json> rows = eval::read_jsonl(input);
  std::unique_ptr<std::ofstream> file;
  if (!output.empty() && output != "-") {
    file = std::make_unique<std::ofstream>(output);
    if (!*file) fail("{}: cannot write", output);
  }
  std::ostream& out = file ? *file : std::cout;
  size_t correct = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    auto& row = rows[i];
    std::optional<std::string> ref;
    std::optional<std::string> pred;
    try {
      ref = text_or_null(row, "ref", "expected_answer");
      pred = text_or_null(row, "pred", "predicted_answer");
    } catch (const Error& e) {
      fail("{}:{}: {}", input, i + 1, e.what());
    }
    if (!ref) fail("{}:{}: row has no 'ref'", input, i + 1);
    bool ok = eval::answers_match(*ref, pred, options);
    correct += ok;
    row["correct"] = ok;
    out << row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  out.flush();
  if (!out) fail("{}: write failed", output.empty() ? "stdout" : output);
  fmt::print(stderr, "graded {} rows: {} correct\n", rows.size(), correct);
}

nlohmann::json summarize_file(const std::string& input, const std::string& json_out, bool print_table) {
  nlohmann::json summary = eval::summarize(eval::group_rows(eval::read_jsonl(input)));
  if (print_table) fmt::print("{}", eval::format_summary_table(summary));
  if (!json_out.empty()) write_json_file(json_out, summary);
  return summary;
}

std::string default_summary_path(const std::string& results) {
  std::string base = results;
  if (base.size() > 6 && base.compare(base.size() - 6, 6, ".jsonl") == 0) base.resize(base.size() - 6);
  return base + ".summary.json";
}

}  // namespace

void register_eval(CLI::App& app) {
  auto config = std::make_shared<eval::EvalConfig>();
  auto endpoint = std::make_shared<std::string>("chat");
  auto no_system = std::make_shared<bool>(false);
  auto system_text = std::make_shared<std::string>();
  auto take_modulo = std::make_shared<long long>(0);
  auto* cmd = app.add_subcommand("eval", "Evaluate a served model on a math dataset; grade; summarize");
  cmd->require_subcommand(0, 1);
  cmd->add_option("--server", config->server, "Base URL of an OpenAI-compatible server")->capture_default_str();
  cmd->add_option("--dataset", config->dataset, "aime24|aime25|amc23|math500|gsm8k or a .jsonl path");
  cmd->add_option("--out", config->out, "Results file (JSON lines; appended, resumed)");
  cmd->add_option("--prompt", config->prompt,
                  "generic (NeMo-Skills generic/math), tir (openmath/tir + server-side "
                  "code execution) or plain (the bare problem)")
      ->capture_default_str();
  cmd->add_option("--prompt-template", config->prompt_template_file,
                  "File with the user message; {problem} and {total_code_executions} are filled in");
  cmd->add_option("--system", *system_text, "System message (default: empty, as NeMo-Skills sends)");
  cmd->add_flag("--no-system", *no_system, "Send no system message (the chat template's default applies)");
  cmd->add_option("--endpoint", *endpoint, "chat (/v1/chat/completions) or completions (prompt sent as is)")
      ->capture_default_str();
  cmd->add_option("--model", config->model, "Model name to send (default: none, the server's own)");
  cmd->add_option("--api-key", config->api_key, "Bearer token for the server");
  cmd->add_option("--samples", config->samples, "Samples per problem")->capture_default_str();
  cmd->add_option("--temperature", config->temperature, "Sampling temperature")->capture_default_str();
  cmd->add_option("--top-p", config->top_p, "Nucleus sampling")->capture_default_str();
  cmd->add_option("--max-tokens", config->max_tokens, "Tokens per sample at most")->capture_default_str();
  cmd->add_option("--concurrency", config->concurrency, "Requests in flight at most")->capture_default_str();
  cmd->add_option("--seed", config->seed, "Base seed (each problem/sample derives its own)")->capture_default_str();
  cmd->add_option("--time-budget-s", config->time_budget_s, "Server early stop: per-problem deadline (s)");
  cmd->add_option("--consensus", config->consensus, "Server early stop: stop once this many samples agree");
  cmd->add_option("--max-code-executions", config->max_code_executions, "tir: code calls per sample")
      ->capture_default_str();
  cmd->add_flag("--tools", config->tools,
                "Ask the server to run the model's code (\"qed\": {\"tir\": true}); implied by --prompt tir");
  cmd->add_flag("--parse-reasoning", config->parse_reasoning, "Grade only the text after the last </think>");
  cmd->add_option("--take-modulo", *take_modulo, "Compare integer answers modulo M (AIMO: 1000)");
  cmd->add_option("--limit", config->limit, "Evaluate only the first N problems");
  cmd->add_option("--request-timeout-s", config->request_timeout_s, "Per-request HTTP timeout")->capture_default_str();
  cmd->add_flag("!--no-progress", config->progress, "No progress bar");

  auto grade_in = std::make_shared<std::string>();
  auto grade_out = std::make_shared<std::string>();
  auto grade_modulo = std::make_shared<long long>(0);
  auto* grade = cmd->add_subcommand("grade", "Grade (pred, ref) rows: each comes back with correct: true|false");
  grade->add_option("--input", *grade_in, "JSON lines with 'pred' and 'ref'")->required();
  grade->add_option("--output", *grade_out, "Where the graded rows go (default: stdout)");
  grade->add_option("--take-modulo", *grade_modulo, "Compare integer answers modulo M");
  grade->callback([grade_in, grade_out, grade_modulo] {
    eval::GradeOptions options;
    if (*grade_modulo < 0) fail("--take-modulo must be positive");
    if (*grade_modulo > 0) options.take_modulo = *grade_modulo;
    grade_file(*grade_in, *grade_out, options);
  });

  auto sum_in = std::make_shared<std::string>();
  auto sum_json = std::make_shared<std::string>();
  auto* summarize = cmd->add_subcommand("summarize", "Metrics of a results file: a table, and JSON");
  summarize->add_option("--input", *sum_in, "Results file written by qed eval")->required();
  summarize->add_option("--json", *sum_json, "Where the JSON goes (default: RESULTS.summary.json)");
  summarize->callback([sum_in, sum_json] {
    summarize_file(*sum_in, sum_json->empty() ? default_summary_path(*sum_in) : *sum_json, true);
  });

  cmd->callback([cmd, config, endpoint, no_system, system_text, take_modulo] {
    if (!cmd->get_subcommands().empty()) return;
    if (config->dataset.empty()) fail("qed eval: --dataset is required (or use 'qed eval grade|summarize')");
    if (config->out.empty()) fail("qed eval: --out is required");
    if (*endpoint == "chat") {
      config->endpoint = eval::ApiEndpoint::Chat;
    } else if (*endpoint == "completions") {
      config->endpoint = eval::ApiEndpoint::Completions;
    } else {
      fail("--endpoint {}: chat or completions", *endpoint);
    }
    if (*no_system) {
      config->system.reset();
    } else {
      config->system = *system_text;
    }
    if (*take_modulo < 0) fail("--take-modulo must be positive");
    if (*take_modulo > 0) config->grading.take_modulo = *take_modulo;
    if (config->max_tokens < 1) fail("--max-tokens must be at least 1");
    if (config->temperature < 0) fail("--temperature must not be negative");
    eval::EvalOutcome outcome = eval::run_eval(*config);
    fmt::print(stderr, "eval: {} new rows, {} already done → {}\n", outcome.rows_written, outcome.rows_skipped,
               config->out);
    summarize_file(config->out, default_summary_path(config->out), true);
  });
}

}  // namespace qed::cli
