#include "sandbox/worker_pool.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "core/error.h"
#include "sandbox/seccomp_policy.h"

namespace qed::sandbox {

WorkerPool::WorkerPool(const SandboxConfig& config, std::string worker_source)
    : config_(config), worker_source_(std::move(worker_source)) {
  if (!config_.jail.insecure_no_jail) seccomp_bpf_ = build_seccomp_bpf();
  try {
    idle_.push_back(start_one());
  } catch (const Error& e) {
    if (config_.jail.insecure_no_jail) throw;
    fail(
        "{}\nsandbox: refusing to start: the first jailed worker did not come up. If bwrap could not create "
        "namespaces, this host forbids unprivileged user namespaces: check `sysctl kernel.unprivileged_userns_clone "
        "user.max_user_namespaces` (both must be non-zero). --insecure-no-jail exists for development only",
        e.what());
  }
  refill_ = std::thread([this] { refill_loop(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (refill_.joinable()) refill_.join();
  idle_.clear();
}

std::unique_ptr<WorkerProcess> WorkerPool::start_one() {
  try {
    auto started = std::chrono::steady_clock::now();
    auto w = WorkerProcess::start(spawner_, config_.jail, seccomp_bpf_, worker_source_, config_.jail.preimport,
                                  std::chrono::duration<double>(config_.startup_timeout_s));
    ++spawned_;
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (seconds > 5.0) spdlog::warn("sandbox: a worker took {:.1f} s to start (machine overloaded?)", seconds);
    return w;
  } catch (const Error&) {
    ++spawn_failures_;
    throw;
  }
}

std::unique_ptr<WorkerProcess> WorkerPool::take() {
  {
    std::lock_guard lock(mutex_);
    while (!idle_.empty()) {
      auto w = std::move(idle_.front());
      idle_.pop_front();
      if (w->alive()) {
        wake_.notify_all();
        return w;
      }
    }
  }
  wake_.notify_all();
  return start_one();
}

size_t WorkerPool::idle() const {
  std::lock_guard lock(mutex_);
  return idle_.size();
}

void WorkerPool::refill_loop() {
  // One worker at a time: starting jails competes with running sessions for the CPU.
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (idle_.size() >= config_.warm_workers) {
      wake_.wait(lock, [&] { return stopping_ || idle_.size() < config_.warm_workers; });
      continue;
    }
    lock.unlock();
    std::unique_ptr<WorkerProcess> w;
    try {
      w = start_one();
    } catch (const Error& e) {
      spdlog::error("sandbox: warm pool could not start a worker: {}", e.what());
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    lock.lock();
    if (w) idle_.push_back(std::move(w));
  }
}

}  // namespace qed::sandbox
