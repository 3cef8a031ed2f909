#include "backend/tp/rank_threads.h"

#include <utility>

namespace qed::tp {

RankThreads::RankThreads(int ranks, const std::function<void(int)>& init) : errors_(size_t(ranks)) {
  for (int r = 0; r < ranks; ++r) threads_.emplace_back([this, r] { loop(r); });
  try {
    run(init);
  } catch (...) {
    // No destructor runs for a constructor that throws: the threads are stopped and joined here.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
    throw;
  }
}

RankThreads::~RankThreads() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void RankThreads::run(const std::function<void(int)>& job) {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    for (std::exception_ptr& e : errors_) e = nullptr;
    job_ = &job;
    pending_ = int(threads_.size());
    ++generation_;
    wake_.notify_all();
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
  }
  for (std::exception_ptr& e : errors_) {
    if (e) std::rethrow_exception(std::exchange(e, nullptr));
  }
}

void RankThreads::loop(int rank) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const std::function<void(int)>* job = job_;
    lock.unlock();
    std::exception_ptr error;
    try {
      (*job)(rank);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    errors_[size_t(rank)] = error;
    if (--pending_ == 0) done_.notify_all();
  }
}

}  // namespace qed::tp
