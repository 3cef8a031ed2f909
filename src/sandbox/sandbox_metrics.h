#pragma once
// Counters behind GET /metrics (Prometheus text exposition format 0.0.4).
#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace qed::sandbox {

enum class ExecStatus { Completed = 0, Error = 1, Timeout = 2 };

class SandboxMetrics {
 public:
  void record(bool session_language, ExecStatus status, double seconds);
  void count_crash() { ++worker_crashes_; }
  void count_kill() { ++worker_kills_; }
  void count_rejected() { ++rejected_; }

  struct Gauges {
    size_t sessions;
    size_t idle_workers;
    uint64_t workers_started;
    uint64_t worker_start_failures;
    uint64_t sessions_expired;
    int in_flight;
  };
  std::string render(const Gauges& gauges) const;

 private:
  // [language: 0 = ipython, 1 = python3][status]
  std::array<std::array<std::atomic<uint64_t>, 3>, 2> executions_{};
  std::atomic<uint64_t> duration_us_{0};
  std::atomic<uint64_t> duration_count_{0};
  std::atomic<uint64_t> worker_crashes_{0};
  std::atomic<uint64_t> worker_kills_{0};
  std::atomic<uint64_t> rejected_{0};
};

}  // namespace qed::sandbox
