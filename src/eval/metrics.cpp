#include "eval/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "eval/answer_grader.h"
#include "eval/answer_normalization.h"

namespace qed::eval {

double pass_at_k(int n, int c, int k) {
  if (n < 1 || c < 0 || c > n || k < 1 || k > n)
    fail("pass@k: needs 0 <= c <= n and 1 <= k <= n (n={} c={} k={})", n, c, k);
  if (n - c < k) return 1.0;
  // C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i): a product of ratios, no huge binomials.
  double none_correct = 1.0;
  for (int i = n - c + 1; i <= n; ++i) none_correct *= 1.0 - static_cast<double>(k) / i;
  return 1.0 - none_correct;
}

std::vector<ProblemResult> group_rows(const std::vector<nlohmann::json>& rows) {
  std::vector<ProblemResult> problems;
  std::map<std::string, size_t> index;
  std::set<std::pair<std::string, int>> seen;
  for (const auto& row : rows) {
    if (!row.contains("problem_id") || !row.contains("correct"))
      fail("results row without problem_id/correct: {}", row.dump().substr(0, 200));
    std::string id = row["problem_id"].is_string() ? row["problem_id"].get<std::string>() : row["problem_id"].dump();
    if (!seen.emplace(id, row.value("sample", 0)).second) continue;  // a repeated row counts once
    auto [it, fresh] = index.emplace(id, problems.size());
    if (fresh) problems.push_back({id, {}});
    SampleResult s;
    s.sample = row.value("sample", 0);
    s.correct = row["correct"].is_boolean() && row["correct"].get<bool>();
    if (row.contains("predicted_answer") && row["predicted_answer"].is_string()) {
      // Votes are counted per normalized answer, so \frac{1}{2} and \dfrac12 agree.
      s.answer = normalize_answer(row["predicted_answer"].get<std::string>());
    }
    s.completion_tokens = row.value("completion_tokens", 0LL);
    s.tool_calls = row.value("tool_calls", 0LL);
    s.time_s = row.value("time_s", 0.0);
    problems[it->second].samples.push_back(std::move(s));
  }
  for (auto& p : problems) {
    std::sort(p.samples.begin(), p.samples.end(), [](const auto& a, const auto& b) { return a.sample < b.sample; });
  }
  return problems;
}

bool majority_correct(const ProblemResult& problem, int k, std::string* majority) {
  struct Vote {
    std::string answer;  // the first spelling of this value
    int count = 0;
    bool correct = false;
  };
  std::vector<Vote> votes;  // in order of first appearance
  for (int i = 0; i < k && i < static_cast<int>(problem.samples.size()); ++i) {
    const auto& s = problem.samples[i];
    if (!s.answer) continue;
    // One vote per value: \dfrac{1}{2}, \frac12 and 0.5 are the same answer.
    auto it =
        std::find_if(votes.begin(), votes.end(), [&](const Vote& v) { return answers_match(v.answer, s.answer); });
    if (it == votes.end()) it = votes.insert(votes.end(), Vote{*s.answer, 0, false});
    ++it->count;
    it->correct = it->correct || s.correct;
  }
  if (votes.empty()) return false;
  auto best = votes.begin();
  for (auto it = votes.begin(); it != votes.end(); ++it)
    if (it->count > best->count) best = it;
  if (majority) *majority = best->answer;
  return best->correct;
}

namespace {

std::vector<int> k_values(int n) {
  std::vector<int> ks;
  for (int k = 1; k < n; k *= 2) ks.push_back(k);
  ks.push_back(n);
  return ks;
}

}  // namespace

nlohmann::json summarize(const std::vector<ProblemResult>& problems) {
  nlohmann::json out;
  out["problems"] = problems.size();
  if (problems.empty()) return out;
  int min_n = INT32_MAX, max_n = 0;
  long long samples = 0, correct = 0, no_answer = 0, tokens = 0, tool_calls = 0;
  double time_s = 0, accuracy = 0;
  nlohmann::json per_problem = nlohmann::json::array();
  for (const auto& p : problems) {
    int n = static_cast<int>(p.samples.size());
    min_n = std::min(min_n, n);
    max_n = std::max(max_n, n);
    int c = 0;
    nlohmann::json histogram = nlohmann::json::object();
    for (const auto& s : p.samples) {
      c += s.correct;
      no_answer += !s.answer;
      tokens += s.completion_tokens;
      tool_calls += s.tool_calls;
      time_s += s.time_s;
      std::string key = s.answer ? *s.answer : std::string("<no answer>");
      histogram[key] = histogram.value(key, 0) + 1;
    }
    samples += n;
    correct += c;
    accuracy += static_cast<double>(c) / n;
    std::string majority;
    bool maj = majority_correct(p, n, &majority);
    per_problem.push_back({{"id", p.id},
                           {"samples", n},
                           {"correct", c},
                           {"majority", majority},
                           {"majority_correct", maj},
                           {"answers", histogram}});
  }
  const double count = static_cast<double>(problems.size());
  out["samples"] = samples;
  out["samples_per_problem"] =
      min_n == max_n ? nlohmann::json(min_n) : nlohmann::json({{"min", min_n}, {"max", max_n}});
  out["correct"] = correct;
  out["accuracy"] = accuracy / count;  // pass@1 averaged over all samples of each problem
  nlohmann::json pass = nlohmann::json::object(), maj = nlohmann::json::object();
  for (int k : k_values(min_n)) {
    double pass_sum = 0, maj_sum = 0;
    for (const auto& p : problems) {
      int n = static_cast<int>(p.samples.size());
      int c =
          static_cast<int>(std::count_if(p.samples.begin(), p.samples.end(), [](const auto& s) { return s.correct; }));
      pass_sum += pass_at_k(n, c, k);
      maj_sum += majority_correct(p, k);
    }
    pass[fmt::format("pass@{}", k)] = pass_sum / count;
    maj[fmt::format("maj@{}", k)] = maj_sum / count;
  }
  out["pass@k"] = pass;
  out["maj@k"] = maj;
  out["no_answer"] = static_cast<double>(no_answer) / static_cast<double>(samples);
  out["completion_tokens"] = {{"total", tokens},
                              {"mean_per_sample", static_cast<double>(tokens) / static_cast<double>(samples)}};
  out["tool_calls"] = {{"total", tool_calls},
                       {"mean_per_sample", static_cast<double>(tool_calls) / static_cast<double>(samples)}};
  out["generation_time_s"] = {{"total", time_s}, {"mean_per_sample", time_s / static_cast<double>(samples)}};
  out["per_problem"] = per_problem;
  return out;
}

std::string format_summary_table(const nlohmann::json& s) {
  std::string out;
  auto line = [&](const std::string& name, const std::string& value) {
    out += fmt::format("{:<26} {}\n", name, value);
  };
  auto pct = [](double v) { return fmt::format("{:.2f}%", 100.0 * v); };
  line("problems", std::to_string(s.value("problems", 0)));
  if (s.value("problems", 0) == 0) return out;
  line("samples", std::to_string(s["samples"].get<long long>()));
  line("accuracy (pass@1, avg)", pct(s["accuracy"].get<double>()));
  for (const auto& [k, v] : s["pass@k"].items()) line(k, pct(v.get<double>()));
  for (const auto& [k, v] : s["maj@k"].items()) line(k, pct(v.get<double>()));
  line("no answer", pct(s["no_answer"].get<double>()));
  line("completion tokens", fmt::format("{} ({:.1f}/sample)", s["completion_tokens"]["total"].get<long long>(),
                                        s["completion_tokens"]["mean_per_sample"].get<double>()));
  line("tool calls", fmt::format("{} ({:.2f}/sample)", s["tool_calls"]["total"].get<long long>(),
                                 s["tool_calls"]["mean_per_sample"].get<double>()));
  line("generation time", fmt::format("{:.1f} s ({:.2f} s/sample)", s["generation_time_s"]["total"].get<double>(),
                                      s["generation_time_s"]["mean_per_sample"].get<double>()));
  return out;
}

}  // namespace qed::eval
