#pragma once
// Threads for sandbox calls, so neither the HTTP threads nor the engine's step loop ever wait on one: jobs run
// in the order posted, on a fixed number of threads. The destructor runs what is queued, then joins (callers make
// queued jobs cheap to skip once their request has ended).
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qed::tir {

class ToolExecutor {
 public:
  explicit ToolExecutor(int num_threads);
  ~ToolExecutor();
  ToolExecutor(const ToolExecutor&) = delete;
  ToolExecutor& operator=(const ToolExecutor&) = delete;

  void post(std::function<void()> job);

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace qed::tir
