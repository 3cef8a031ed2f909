#pragma once
// Server metrics in Prometheus text format (vLLM's metric names under the `qed:` prefix, so dashboards written
// for vLLM map over). Counters and histograms are updated from the engine thread when requests finish.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "server/engine_service.h"

namespace qed::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double value);
  // `name_bucket{le=...}`, `name_sum`, `name_count` lines.
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct FinishedRequest {
  std::string finish_reason;  // of the request: "stop", "length", "abort" or "error" (the last choice's)
  int prompt_tokens = 0;
  int generation_tokens = 0;
  int cached_tokens = 0;
  double ttft_s = 0;
  double e2e_s = 0;
  double queue_s = 0;
  std::vector<double> inter_token_s;
  std::map<std::string, int> cut_samples;  // early stop: samples cut, by reason ("consensus", ...)
};

class ServerMetrics {
 public:
  ServerMetrics();
  void record(const FinishedRequest& request);
  void record_rejected(int status);  // requests answered with an error before reaching the engine
  std::string render(const std::string& model_name, const EngineSnapshot& engine, int requests_in_flight) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> finished_by_reason_;
  std::map<int, uint64_t> rejected_by_status_;
  std::map<std::string, uint64_t> cut_by_reason_;
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0, cached_tokens_ = 0;
  Histogram ttft_, itl_, e2e_, queue_;
};

}  // namespace qed::server
