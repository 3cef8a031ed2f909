#pragma once
// Metrics over eval rows (one row per problem × sample): accuracy, unbiased pass@k, maj@k, per-problem answer
// histograms, tokens, tool calls and time — what NeMo-Skills' math metrics report, from the same rows.
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace qed::eval {

// The unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), the chance that k of the n samples
// drawn without replacement contain a correct one. Requires 0 <= c <= n and 1 <= k <= n.
double pass_at_k(int n, int c, int k);

struct SampleResult {
  int sample = 0;
  bool correct = false;
  std::optional<std::string> answer;  // the normalized predicted answer; nullopt: none
  long long completion_tokens = 0;
  long long tool_calls = 0;
  double time_s = 0;
};

struct ProblemResult {
  std::string id;
  std::vector<SampleResult> samples;  // ordered by sample index
};

// Rows as `qed eval` writes them (problem_id, sample, correct, predicted_answer, ...), grouped by problem.
std::vector<ProblemResult> group_rows(const std::vector<nlohmann::json>& rows);

// maj@k over the first k samples: the most frequent answer (ties: the one seen first; no-answer samples do not
// vote) and whether it is correct.
bool majority_correct(const ProblemResult& problem, int k, std::string* majority = nullptr);

nlohmann::json summarize(const std::vector<ProblemResult>& problems);

// The summary as an aligned text table (one metric a line) for the terminal.
std::string format_summary_table(const nlohmann::json& summary);

}  // namespace qed::eval
