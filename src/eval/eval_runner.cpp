#include "eval/eval_runner.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "eval/answer_extraction.h"
#include "eval/dataset.h"
#include "eval/jsonl_file.h"
#include "eval/prompt_template.h"
#include "server/http/http_client.h"

namespace qed::eval {

namespace {

struct ServerAddress {
  std::string host;
  uint16_t port = 80;
  std::string base;  // path prefix before /v1/...
};

ServerAddress parse_server(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) {
    rest = rest.substr(7);
  } else if (rest.find("://") != std::string::npos) {
    fail("--server {}: only http:// URLs are supported", url);
  }
  ServerAddress a;
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  a.base = slash == std::string::npos ? "" : rest.substr(slash);
  while (!a.base.empty() && a.base.back() == '/') a.base.pop_back();
  if (a.base.size() >= 3 && a.base.compare(a.base.size() - 3, 3, "/v1") == 0) a.base.resize(a.base.size() - 3);
  size_t colon = hostport.rfind(':');
  a.host = hostport.substr(0, colon);
  if (colon != std::string::npos) {
    std::string port = hostport.substr(colon + 1);
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end || p < 1 || p > 65535) fail("--server {}: bad port '{}'", url, port);
    a.port = static_cast<uint16_t>(p);
  }
  if (a.host.empty()) fail("--server {}: no host", url);
  return a;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("--prompt-template {}: cannot open", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One request: a problem and the sample indices it produces (one sample, or all missing ones when the server's
// early stop must see the siblings together).
struct WorkItem {
  size_t problem_index = 0;
  std::vector<int> samples;
};

class EvalRun {
 public:
  explicit EvalRun(const EvalConfig& config)
      : config_(config), address_(parse_server(config.server)), results_(config.out) {
    if (config.samples < 1) fail("--samples must be at least 1");
    if (config.concurrency < 1) fail("--concurrency must be at least 1");
    problems_ = load_dataset(resolve_dataset(config.dataset));
    if (config.limit > 0 && static_cast<size_t>(config.limit) < problems_.size()) problems_.resize(config.limit);
    template_ = config.prompt_template_file.empty() ? builtin_prompt_template(config.prompt)
                                                    : read_text_file(config.prompt_template_file);
    plan();
  }

  EvalOutcome run() {
    std::vector<std::thread> workers;
    const int n = std::min<int>(config_.concurrency, static_cast<int>(work_.size()));
    for (int i = 0; i < n; ++i) workers.emplace_back([this] { worker(); });
    for (auto& w : workers) w.join();
    if (config_.progress && total_ > 0) fmt::print(stderr, "\n");
    if (!first_error_.empty()) fail("{}", first_error_);
    return {written_, skipped_};
  }

 private:
  void plan() {
    std::set<std::pair<std::string, int>> done;
    for (const auto& row : results_.existing_rows()) {
      if (!row.contains("problem_id") || !row["problem_id"].is_string() || !row.contains("sample")) continue;
      if (!done.emplace(row["problem_id"].get<std::string>(), row.value("sample", -1)).second) continue;
      if (row.value("correct", false)) ++correct_;
      ++finished_before_;
    }
    const bool grouped = config_.time_budget_s || config_.consensus;
    for (size_t p = 0; p < problems_.size(); ++p) {
      WorkItem item{p, {}};
      for (int s = 0; s < config_.samples; ++s) {
        if (done.count({problems_[p].id, s})) {
          ++skipped_;
          continue;
        }
        if (grouped) {
          item.samples.push_back(s);
        } else {
          work_.push_back({p, {s}});
        }
      }
      if (grouped && !item.samples.empty()) work_.push_back(std::move(item));
    }
    for (const auto& w : work_) total_ += w.samples.size();
    finished_before_ = std::min(finished_before_, skipped_);
    if (skipped_ > 0) spdlog::info("eval: {} rows already in {}, {} to go", skipped_, config_.out, total_);
  }

  nlohmann::json request_body(const WorkItem& item) const {
    const Problem& problem = problems_[item.problem_index];
    std::string user = fill_prompt(template_, problem.problem, config_.max_code_executions);
    nlohmann::json body;
    if (!config_.model.empty()) body["model"] = config_.model;
    if (config_.endpoint == ApiEndpoint::Chat) {
      nlohmann::json messages = nlohmann::json::array();
      if (config_.system) messages.push_back({{"role", "system"}, {"content", *config_.system}});
      messages.push_back({{"role", "user"}, {"content", user}});
      body["messages"] = messages;
    } else {
      body["prompt"] = user;
    }
    body["max_tokens"] = config_.max_tokens;
    body["temperature"] = config_.temperature;
    body["top_p"] = config_.top_p;
    body["n"] = item.samples.size();
    // A seed per (problem, first sample): a rerun of one sample draws the same tokens.
    body["seed"] = config_.seed + static_cast<long long>(item.problem_index) * 1000003LL + item.samples.front();
    body["skip_special_tokens"] = false;
    nlohmann::json ext = nlohmann::json::object();
    if (config_.tools || (config_.prompt == "tir" && config_.prompt_template_file.empty())) {
      ext["tir"] = true;
      ext["max_code_executions"] = config_.max_code_executions;
    }
    if (config_.time_budget_s) ext["time_budget_s"] = *config_.time_budget_s;
    if (config_.consensus) ext["consensus"] = *config_.consensus;
    if (!ext.empty()) body["qed"] = ext;
    return body;
  }

  http::ClientResponse post(http::HttpClient& client, const nlohmann::json& body) const {
    const std::string target =
        address_.base + (config_.endpoint == ApiEndpoint::Chat ? "/v1/chat/completions" : "/v1/completions");
    http::Headers headers;
    if (!config_.api_key.empty()) headers.emplace_back("Authorization", "Bearer " + config_.api_key);
    // Connection failures and 5xx are retried (a server restarting, a full queue answering 503); 4xx are not.
    for (int attempt = 0;; ++attempt) {
      try {
        http::ClientResponse res = client.post_json(target, body, headers);
        if (res.status >= 500 && attempt < 3) {
          std::this_thread::sleep_for(std::chrono::seconds(1 << attempt));
          continue;
        }
        return res;
      } catch (const Error&) {
        if (attempt >= 3) throw;
        std::this_thread::sleep_for(std::chrono::seconds(1 << attempt));
      }
    }
  }

  std::vector<nlohmann::json> rows_for(const WorkItem& item, const nlohmann::json& response, double seconds) const {
    const Problem& problem = problems_[item.problem_index];
    if (!response.contains("choices") || !response["choices"].is_array()) {
      fail("server response has no 'choices': {}", response.dump().substr(0, 300));
    }
    const auto& choices = response["choices"];
    long long completion_tokens = 0, prompt_tokens = 0;
    if (response.contains("usage") && response["usage"].is_object()) {
      completion_tokens = response["usage"].value("completion_tokens", 0LL);
      prompt_tokens = response["usage"].value("prompt_tokens", 0LL);
    }
    std::vector<nlohmann::json> rows;
    for (size_t i = 0; i < item.samples.size(); ++i) {
      nlohmann::json row{{"problem_id", problem.id}, {"sample", item.samples[i]}};
      std::string text;
      std::string finish_reason = "missing";
      const nlohmann::json* choice = nullptr;
      for (const auto& c : choices)
        if (c.value("index", -1) == static_cast<int>(i)) choice = &c;
      if (choice) {
        const nlohmann::json& message =
            config_.endpoint == ApiEndpoint::Chat ? choice->value("message", nlohmann::json::object()) : *choice;
        const char* field = config_.endpoint == ApiEndpoint::Chat ? "content" : "text";
        if (message.contains(field) && message[field].is_string()) text = message[field].get<std::string>();
        if (choice->contains("finish_reason") && (*choice)["finish_reason"].is_string()) {
          finish_reason = (*choice)["finish_reason"].get<std::string>();
        }
      }
      std::string graded = config_.parse_reasoning ? strip_reasoning(text) : text;
      std::optional<std::string> answer = extract_boxed(graded);
      row["expected_answer"] = problem.expected_answer;
      row["predicted_answer"] = answer ? nlohmann::json(*answer) : nlohmann::json();
      row["correct"] = answers_match(problem.expected_answer, answer, config_.grading);
      row["generation"] = text;
      row["finish_reason"] = finish_reason;
      // usage covers the whole request; with n > 1 it is shared evenly (the API reports no per-choice count).
      row["completion_tokens"] = completion_tokens / static_cast<long long>(item.samples.size());
      row["prompt_tokens"] = prompt_tokens;
      size_t calls = 0;
      for (size_t pos = text.find("<tool_call>"); pos != std::string::npos; pos = text.find("<tool_call>", pos + 1)) {
        ++calls;
      }
      row["tool_calls"] = calls;
      row["time_s"] = seconds;
      rows.push_back(std::move(row));
    }
    return rows;
  }

  void worker() {
    http::HttpClient client(address_.host, address_.port,
                            std::chrono::milliseconds(static_cast<long long>(config_.request_timeout_s * 1000)));
    while (true) {
      size_t index = next_.fetch_add(1);
      if (index >= work_.size() || failed_.load()) return;
      const WorkItem& item = work_[index];
      try {
        auto start = std::chrono::steady_clock::now();
        http::ClientResponse res = post(client, request_body(item));
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        nlohmann::json body = res.json();
        if (res.status != 200) {
          std::string message = body.contains("error") && body["error"].is_object()
                                    ? body["error"].value("message", res.body)
                                    : res.body.substr(0, 300);
          fail("server answered {} for problem '{}': {}", res.status, problems_[item.problem_index].id, message);
        }
        std::vector<nlohmann::json> rows = rows_for(item, body, seconds);
        std::lock_guard<std::mutex> lock(write_mutex_);
        for (const auto& row : rows) {
          results_.append(row);
          ++written_;
          correct_ += row["correct"].get<bool>();
        }
        report_progress();
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(write_mutex_);
        if (first_error_.empty()) first_error_ = e.what();
        failed_ = true;
        return;
      }
    }
  }

  void report_progress() {
    if (!config_.progress) return;
    const size_t done = written_;
    const size_t finished = finished_before_ + written_;
    const double accuracy = finished ? 100.0 * static_cast<double>(correct_) / static_cast<double>(finished) : 0.0;
    constexpr int kWidth = 30;
    int filled = total_ ? static_cast<int>(kWidth * done / total_) : kWidth;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    if (isatty(STDERR_FILENO)) {
      fmt::print(stderr, "\r[{}] {}/{} accuracy {:.1f}% ", bar, done, total_, accuracy);
    } else if (done == total_ || done % std::max<size_t>(1, total_ / 10) == 0) {
      fmt::print(stderr, "[{}] {}/{} accuracy {:.1f}%\n", bar, done, total_, accuracy);
    }
  }

  const EvalConfig& config_;
  ServerAddress address_;
  ResultsFile results_;
  std::vector<Problem> problems_;
  std::string template_;
  std::vector<WorkItem> work_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> failed_{false};
  std::mutex write_mutex_;
  std::string first_error_;
  size_t total_ = 0, written_ = 0, skipped_ = 0, finished_before_ = 0, correct_ = 0;
};

}  // namespace

EvalOutcome run_eval(const EvalConfig& config) {
  EvalRun run(config);
  return run.run();
}

}  // namespace qed::eval
