#pragma once
// `qed eval`: sends every (problem, sample) not yet in the results file to an OpenAI-compatible server from a
// bounded pool of workers, grades each answer and appends one fsync'd row per sample, so an interrupted run
// resumes where it stopped.
#include <optional>
#include <string>

#include "eval/answer_grader.h"

namespace qed::eval {

enum class ApiEndpoint { Chat, Completions };

struct EvalConfig {
  std::string server = "http://127.0.0.1:8000";
  std::string model;    // "" = not sent (the server's one model)
  std::string api_key;  // "" = no Authorization header
  std::string dataset;  // a name or a path (dataset.h)
  std::string prompt = "generic";
  std::string prompt_template_file;                   // overrides `prompt`'s text
  std::optional<std::string> system = std::string();  // chat: the system message (NeMo-Skills sends "")
  ApiEndpoint endpoint = ApiEndpoint::Chat;
  int samples = 1;
  double temperature = 0.0;
  double top_p = 1.0;
  int max_tokens = 2048;
  int concurrency = 4;
  long long seed = 0;
  std::optional<double> time_budget_s;  // → "qed": {"time_budget_s"} (one request per problem)
  std::optional<int> consensus;         // → "qed": {"consensus"} (one request per problem)
  int max_code_executions = 8;          // tir: "qed": {"tir": true, "max_code_executions"} and the prompt's count
  bool tools = false;                   // server-side code execution with any prompt (--prompt tir implies it)
  bool parse_reasoning = false;         // grade only the text after </think>
  GradeOptions grading;
  double request_timeout_s = 3600;
  int limit = 0;  // evaluate only the first `limit` problems (0: all)
  std::string out;
  bool progress = true;
};

struct EvalOutcome {
  size_t rows_written = 0;
  size_t rows_skipped = 0;  // already in the results file
};

EvalOutcome run_eval(const EvalConfig& config);

}  // namespace qed::eval
