#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace qed::server {

void Histogram::observe(double value) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  ++counts_[static_cast<size_t>(it - bounds_.begin())];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, count_);
  out += fmt::format("{}_sum{{{}}} {}\n", name, labels, sum_);
  out += fmt::format("{}_count{{{}}} {}\n", name, labels, count_);
}

// vLLM's bucket boundaries for the same metrics.
ServerMetrics::ServerMetrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
             1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}),
      itl_({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}),
      e2e_({0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
            30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}),
      queue_({0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
              30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}) {}

void ServerMetrics::record(const FinishedRequest& request) {
  std::lock_guard lock(mutex_);
  ++finished_by_reason_[request.finish_reason];
  prompt_tokens_ += static_cast<uint64_t>(request.prompt_tokens);
  generation_tokens_ += static_cast<uint64_t>(request.generation_tokens);
  cached_tokens_ += static_cast<uint64_t>(request.cached_tokens);
  if (request.generation_tokens > 0) ttft_.observe(request.ttft_s);
  for (double dt : request.inter_token_s) itl_.observe(dt);
  e2e_.observe(request.e2e_s);
  queue_.observe(request.queue_s);
  for (const auto& [reason, n] : request.cut_samples) cut_by_reason_[reason] += static_cast<uint64_t>(n);
}

void ServerMetrics::record_rejected(int status) {
  std::lock_guard lock(mutex_);
  ++rejected_by_status_[status];
}

std::string ServerMetrics::render(const std::string& model_name, const EngineSnapshot& engine,
                                  int requests_in_flight) const {
  const std::string model = fmt::format("model_name=\"{}\"", model_name);
  std::string out;
  auto gauge = [&](const char* name, const char* help, double value) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0}{{{2}}} {3}\n", name, help, model, value);
  };
  auto counter = [&](const char* name, const char* help, uint64_t value) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0}{{{2}}} {3}\n", name, help, model, value);
  };
  gauge("qed:num_requests_running", "Sequences in the running batch.", engine.num_running);
  gauge("qed:num_requests_waiting", "Sequences waiting for admission (the engine queue).", engine.num_waiting);
  gauge("qed:requests_in_flight", "Requests accepted by the server and not yet finished.", requests_in_flight);
  const double usage =
      engine.kv_total_blocks > 0 ? double(engine.kv_used_blocks) / double(engine.kv_total_blocks) : 0.0;
  gauge("qed:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (1 = full).", usage);
  gauge("qed:kv_cache_used_blocks", "KV-cache blocks referenced by live sequences.", engine.kv_used_blocks);
  gauge("qed:kv_cache_total_blocks", "KV-cache blocks in the pool.", engine.kv_total_blocks);
  counter("qed:num_preemptions_total", "Sequences preempted (recomputed later) for lack of KV blocks.",
          static_cast<uint64_t>(engine.stats.preemptions));
  counter("qed:prefill_tokens_total", "Prompt tokens run through the model (prefix-cache hits excluded).",
          static_cast<uint64_t>(engine.stats.prefill_tokens));
  // vLLM's spec_decode counters under our prefix: acceptance rate = accepted / draft, mean accepted length =
  // 1 + accepted / verify steps.
  counter("qed:spec_decode_num_drafts_total", "Sequence steps that verified a draft (speculative decoding).",
          static_cast<uint64_t>(engine.stats.spec_verify_steps));
  counter("qed:spec_decode_num_draft_tokens_total", "Draft tokens verified by the base model.",
          static_cast<uint64_t>(engine.stats.spec_draft_tokens));
  counter("qed:spec_decode_num_accepted_tokens_total", "Draft tokens accepted (equal to the base model's own).",
          static_cast<uint64_t>(engine.stats.spec_accepted_tokens));

  std::lock_guard lock(mutex_);
  counter("qed:prompt_tokens_total", "Prompt tokens of finished requests.", prompt_tokens_);
  counter("qed:generation_tokens_total", "Generated tokens of finished requests.", generation_tokens_);
  counter("qed:prefix_cache_hit_tokens_total", "Prompt tokens served from the prefix cache.", cached_tokens_);
  out += "# HELP qed:request_success_total Finished requests by finish reason.\n";
  out += "# TYPE qed:request_success_total counter\n";
  for (const char* reason : {"stop", "length", "abort", "error"}) {
    auto it = finished_by_reason_.find(reason);
    out += fmt::format("qed:request_success_total{{{},finished_reason=\"{}\"}} {}\n", model, reason,
                       it == finished_by_reason_.end() ? 0 : it->second);
  }
  out += "# HELP qed:request_rejected_total Requests answered with an error status before generation.\n";
  out += "# TYPE qed:request_rejected_total counter\n";
  for (const auto& [status, count] : rejected_by_status_) {
    out += fmt::format("qed:request_rejected_total{{{},status=\"{}\"}} {}\n", model, status, count);
  }
  out += "# HELP qed:early_stop_cut_samples_total Samples an early-stop policy aborted, by reason.\n";
  out += "# TYPE qed:early_stop_cut_samples_total counter\n";
  for (const char* reason : {"consensus", "stop_after_first", "time_budget"}) {
    auto it = cut_by_reason_.find(reason);
    out += fmt::format("qed:early_stop_cut_samples_total{{{},reason=\"{}\"}} {}\n", model, reason,
                       it == cut_by_reason_.end() ? 0 : it->second);
  }
  auto histogram = [&](const char* name, const char* help, const Histogram& h) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} histogram\n", name, help);
    h.render(out, name, model);
  };
  histogram("qed:time_to_first_token_seconds", "Arrival to first generated token.", ttft_);
  histogram("qed:inter_token_latency_seconds", "Time between consecutive tokens of a sequence.", itl_);
  histogram("qed:e2e_request_latency_seconds", "Arrival to the last sequence finished.", e2e_);
  histogram("qed:request_queue_time_seconds", "Arrival to first scheduled.", queue_);
  return out;
}

}  // namespace qed::server
