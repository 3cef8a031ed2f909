#pragma once
// One persistent host thread per tensor-parallel rank. NCCL's single-process model wants each rank's collectives
// issued by its own thread (or inside one group), so that no rank's enqueue waits on another's; the CUDA runner
// makes each thread's device current in `init`. Host-only, tested on the CPU (tests/backend/tp_cpu_test.cpp).
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qed::tp {

class RankThreads {
 public:
  // Starts `ranks` threads, each running init(rank) first; an error there stops them and is rethrown.
  RankThreads(int ranks, const std::function<void(int)>& init);
  ~RankThreads();
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

  // Runs job(rank) on every rank's thread and waits for all of them; then rethrows the lowest rank's error, if any.
  void run(const std::function<void(int)>& job);

 private:
  void loop(int rank);

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::vector<std::exception_ptr> errors_;
  std::vector<std::thread> threads_;
};

}  // namespace qed::tp
