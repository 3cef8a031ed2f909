#pragma once
// A `qed sandbox` child process for commands that need code execution without a running service (`qed run`):
// started on a free port, ready once it answers /health, stopped (SIGTERM, then SIGKILL) when this object goes.
// The child also gets SIGTERM if this process dies first (PR_SET_PDEATHSIG), so Ctrl-C leaves nothing behind.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tir/sandbox_client.h"

namespace qed::tir {

class SandboxProcess {
 public:
  // `argv` runs the sandbox and must make it print "listening on http://HOST:PORT" (qed sandbox --port 0 does).
  // Throws qed::Error with the child's last output lines if it exits or stays silent past `startup_timeout`.
  SandboxProcess(std::vector<std::string> argv, std::chrono::seconds startup_timeout = std::chrono::seconds(60));
  ~SandboxProcess();
  SandboxProcess(const SandboxProcess&) = delete;
  SandboxProcess& operator=(const SandboxProcess&) = delete;

  const SandboxAddress& address() const { return address_; }
  void stop() noexcept;

 private:
  std::string last_output() const;
  void drain();

  pid_t pid_ = -1;
  int out_fd_ = -1;
  SandboxAddress address_;
  mutable std::mutex mutex_;
  std::deque<std::string> tail_;  // the child's last lines, for error messages
  std::atomic<bool> stopping_{false};
  std::thread drain_thread_;  // keeps reading so the child never blocks on a full pipe
};

}  // namespace qed::tir
