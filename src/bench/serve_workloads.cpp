#include "bench/serve_workloads.h"

#include <cmath>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include "core/error.h"
#include "server/early_stop.h"

namespace qed::bench {

using nlohmann::json;

std::string generic_math_prompt(const std::string& problem) {
  std::string prompt =
      "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n\n";
  prompt += problem;
  return prompt;
}

namespace {

std::vector<std::string> random_prompts(const PromptSource& source, int count) {
  // Common short words: every tokenizer splits them into a few tokens, so words ≈ a stable token count.
  static const char* kWords[] = {"the", "number", "of",     "sum",  "prime", "find",  "value", "and",  "is",
                                 "two", "three",  "square", "even", "odd",   "total", "each",  "more", "than"};
  std::mt19937_64 rng(source.seed);
  std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    std::string p;
    for (int w = 0; w < source.random_words; ++w) {
      if (w > 0) p += ' ';
      p += kWords[pick(rng)];
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

std::vector<std::string> load_prompts(const PromptSource& source, int count) {
  if (source.dataset == "random") return random_prompts(source, count);
  std::ifstream in(source.dataset);
  if (!in) fail("{}: cannot open the dataset", source.dataset);
  std::vector<std::string> rows;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const json row = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_discarded() || !row.is_object()) fail("{}:{}: not a JSON object", source.dataset, n);
    if (row.contains("prompt") && row["prompt"].is_string()) {
      rows.push_back(row["prompt"].get<std::string>());
    } else if (row.contains("problem") && row["problem"].is_string()) {
      rows.push_back(generic_math_prompt(row["problem"].get<std::string>()));
    } else {
      fail("{}:{}: a row needs a string 'prompt' or 'problem'", source.dataset, n);
    }
  }
  if (rows.empty()) fail("{}: no rows", source.dataset);
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(rows[static_cast<size_t>(i) % rows.size()]);
  return out;
}

std::vector<LoadRequest> make_requests(const std::vector<std::string>& prompts, const RequestShape& shape) {
  std::vector<LoadRequest> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    LoadRequest r;
    r.target = shape.chat ? "/v1/chat/completions" : "/v1/completions";
    r.body = {{"max_tokens", shape.max_tokens}, {"temperature", shape.temperature}};
    if (!shape.model.empty()) r.body["model"] = shape.model;
    if (shape.chat) {
      r.body["messages"] = json::array({{{"role", "user"}, {"content", prompts[i]}}});
    } else {
      r.body["prompt"] = prompts[i];
    }
    if (shape.ignore_eos) r.body["ignore_eos"] = true;
    if (shape.seed) r.body["seed"] = *shape.seed + i;
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<LoadRequest> make_aimo_requests(const AimoPreset& preset, const std::string& model, int max_tokens) {
  std::vector<LoadRequest> out;
  for (int seed = 0; seed < preset.samples; ++seed) {
    LoadRequest r;
    r.target = "/v1/chat/completions";
    json ext = {{"group", preset.group}, {"stop_after_first", preset.keep_first}};
    if (preset.tir) {
      ext["tir"] = true;
      ext["max_code_executions"] = preset.max_code_executions;
    }
    r.body = {{"messages", json::array({{{"role", "user"}, {"content", generic_math_prompt(preset.problem)}}})},
              {"max_tokens", max_tokens},
              {"temperature", preset.temperature},
              {"seed", seed},
              {"qed", ext}};
    if (!model.empty()) r.body["model"] = model;
    if (preset.ignore_eos) r.body["ignore_eos"] = true;
    out.push_back(std::move(r));
  }
  return out;
}

json summarize_aimo(const LoadResult& result) {
  int generations = 0, cut = 0, failed = 0;
  int64_t tokens = 0;
  std::vector<double> per_request;
  std::map<std::string, int> votes;
  json samples = json::array();
  for (size_t i = 0; i < result.records.size(); ++i) {
    const RequestRecord& r = result.records[i];
    const std::string finish = r.finish_reasons.empty() ? "" : r.finish_reasons[0];
    const std::string why = r.cuts.empty() ? "" : r.cuts[0];
    const auto answer = server::last_boxed_answer(r.text);
    if (!r.ok) {
      ++failed;
    } else if (!why.empty()) {
      ++cut;
    } else {
      ++generations;
      if (answer) ++votes[*answer];
    }
    tokens += r.output_tokens;
    if (r.ok && r.output_tokens > 0 && r.e2e_s > 0) per_request.push_back(r.output_tokens / r.e2e_s);
    samples.push_back({{"seed", i},
                       {"finish_reason", finish},
                       {"cut", why.empty() ? json(nullptr) : json(why)},
                       {"output_tokens", r.output_tokens},
                       {"e2e_s", r.e2e_s},
                       {"answer", answer ? json(*answer) : json(nullptr)},
                       {"error", r.error.empty() ? json(nullptr) : json(r.error)}});
  }
  const double n = static_cast<double>(per_request.size());
  const double mean = per_request.empty() ? 0 : std::accumulate(per_request.begin(), per_request.end(), 0.0) / n;
  double var = 0;
  for (double x : per_request) var += (x - mean) * (x - mean);
  std::optional<std::string> majority;
  int best = 0;
  for (const auto& [a, v] : votes) {
    if (v > best) {
      majority = a;
      best = v;
    }
  }
  return {{"generations", generations},
          {"cut", cut},
          {"failed", failed},
          {"total_s", result.duration_s},
          {"output_tokens", tokens},
          {"batch_tok_per_s", result.duration_s > 0 ? static_cast<double>(tokens) / result.duration_s : 0.0},
          {"per_request_tok_per_s_mean", mean},
          {"per_request_tok_per_s_std", per_request.empty() ? 0.0 : std::sqrt(var / n)},
          {"majority_answer", majority ? json(*majority) : json(nullptr)},
          {"majority_votes", best},
          {"samples", samples}};
}

}  // namespace qed::bench
