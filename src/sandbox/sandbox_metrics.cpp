#include "sandbox/sandbox_metrics.h"

#include <fmt/format.h>

namespace qed::sandbox {

void SandboxMetrics::record(bool session_language, ExecStatus status, double seconds) {
  ++executions_[session_language ? 0 : 1][static_cast<size_t>(status)];
  duration_us_ += static_cast<uint64_t>(seconds * 1e6);
  ++duration_count_;
}

std::string SandboxMetrics::render(const Gauges& g) const {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  metric("qed_sandbox_executions_total", "counter", "Finished /execute calls by language and process_status.");
  const char* languages[] = {"ipython", "python3"};
  const char* statuses[] = {"completed", "error", "timeout"};
  for (size_t l = 0; l < 2; ++l) {
    for (size_t s = 0; s < 3; ++s) {
      out += fmt::format("qed_sandbox_executions_total{{language=\"{}\",status=\"{}\"}} {}\n", languages[l],
                         statuses[s], executions_[l][s].load());
    }
  }
  metric("qed_sandbox_execute_seconds", "summary", "Wall time of /execute calls.");
  out += fmt::format("qed_sandbox_execute_seconds_sum {:.6f}\n", static_cast<double>(duration_us_.load()) / 1e6);
  out += fmt::format("qed_sandbox_execute_seconds_count {}\n", duration_count_.load());
  metric("qed_sandbox_worker_crashes_total", "counter", "Workers that died or broke protocol during a call.");
  out += fmt::format("qed_sandbox_worker_crashes_total {}\n", worker_crashes_.load());
  metric("qed_sandbox_worker_kills_total", "counter", "Workers killed after timeout plus grace.");
  out += fmt::format("qed_sandbox_worker_kills_total {}\n", worker_kills_.load());
  metric("qed_sandbox_rejected_total", "counter", "Requests rejected with a 4xx/5xx status.");
  out += fmt::format("qed_sandbox_rejected_total {}\n", rejected_.load());
  metric("qed_sandbox_sessions", "gauge", "Live ipython sessions.");
  out += fmt::format("qed_sandbox_sessions {}\n", g.sessions);
  metric("qed_sandbox_idle_workers", "gauge", "Warm interpreters waiting in the pool.");
  out += fmt::format("qed_sandbox_idle_workers {}\n", g.idle_workers);
  metric("qed_sandbox_workers_started_total", "counter", "Jailed interpreters started.");
  out += fmt::format("qed_sandbox_workers_started_total {}\n", g.workers_started);
  metric("qed_sandbox_worker_start_failures_total", "counter", "Interpreters that failed to start.");
  out += fmt::format("qed_sandbox_worker_start_failures_total {}\n", g.worker_start_failures);
  metric("qed_sandbox_sessions_expired_total", "counter", "Sessions closed for being idle.");
  out += fmt::format("qed_sandbox_sessions_expired_total {}\n", g.sessions_expired);
  metric("qed_sandbox_in_flight", "gauge", "/execute calls running now.");
  out += fmt::format("qed_sandbox_in_flight {}\n", g.in_flight);
  return out;
}

}  // namespace qed::sandbox
