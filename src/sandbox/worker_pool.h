#pragma once
// Warm pool: pre-started interpreters (pre-imports done) waiting for a session, refilled in the background,
// so a new session costs a pipe round-trip instead of a jail start plus `import sympy`.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sandbox/process_spawner.h"
#include "sandbox/sandbox_config.h"
#include "sandbox/worker_process.h"

namespace qed::sandbox {

class WorkerPool {
 public:
  // Builds the seccomp program, starts one worker synchronously as a probe (so a host without user namespaces
  // fails here with bwrap's own words), then fills the pool in the background.
  WorkerPool(const SandboxConfig& config, std::string worker_source);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // A ready worker: from the pool when one is idle, otherwise started now (same jail, same pre-imports).
  std::unique_ptr<WorkerProcess> take();

  size_t idle() const;
  uint64_t spawned() const { return spawned_; }
  uint64_t spawn_failures() const { return spawn_failures_; }

 private:
  std::unique_ptr<WorkerProcess> start_one();
  void refill_loop();

  SandboxConfig config_;
  std::string worker_source_;
  std::vector<uint8_t> seccomp_bpf_;
  ProcessSpawner spawner_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<WorkerProcess>> idle_;
  bool stopping_ = false;
  std::atomic<uint64_t> spawned_{0};
  std::atomic<uint64_t> spawn_failures_{0};
  std::thread refill_;
};

}  // namespace qed::sandbox
