#pragma once
// The NeMo-Skills-compatible sandbox API on top of the session manager and the warm pool:
//   POST /execute, GET /sessions, DELETE /sessions/{id}, GET /health, GET /metrics.
// Field names, defaults, status strings, the timeout message and the output cut match NeMo-Skills'
// local_sandbox_server.py so its client (nemo_skills/code_execution/sandbox.py) works unchanged.
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "sandbox/sandbox_config.h"
#include "sandbox/sandbox_metrics.h"
#include "sandbox/session_manager.h"
#include "sandbox/worker_pool.h"
#include "server/http/router.h"

namespace qed::sandbox {

class SandboxService {
 public:
  // Starts the warm pool; throws qed::Error when the jail cannot work on this host.
  explicit SandboxService(SandboxConfig config);
  // Waits for calls in flight, then closes all sessions and workers.
  ~SandboxService();
  SandboxService(const SandboxService&) = delete;
  SandboxService& operator=(const SandboxService&) = delete;

  http::Router router();

  // One /execute call, synchronously: the response body. Throws http::HttpError for bad requests.
  nlohmann::json execute(const nlohmann::json& body, const std::optional<std::string>& session_id);

  const SandboxConfig& config() const { return config_; }

 private:
  nlohmann::json run_in_session(const std::string& session_id, const std::string& code, double timeout_s,
                                const std::string& timeout_text, size_t max_chars, bool plain);
  nlohmann::json run_script(const std::string& code, const std::string& stdin_text, double timeout_s,
                            const std::string& timeout_text, size_t max_chars);
  size_t keep_chars(size_t max_chars) const;

  SandboxConfig config_;
  SandboxMetrics metrics_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<SessionManager> sessions_;
  std::mutex in_flight_mutex_;
  std::condition_variable in_flight_done_;
  int in_flight_ = 0;
  bool stopping_ = false;  // guarded by in_flight_mutex_
};

}  // namespace qed::sandbox
