#pragma once
// Where a step's time goes, for the asynchronous-steps question (issue 5): the device time of each forward (CUDA
// events on the backend's stream), the host time inside forward() around it, and the host gap between one
// forward's return and the next one's start (the engine's scheduling, sampling bookkeeping, detokenizing and stop
// checks: what an asynchronous engine would overlap with the GPU). The start event is recorded at forward()'s
// entry, so the device time also covers the host's packing of the step before its first launch. Off unless
// QED_CUDA_STEP_TIMING=N is set; then a summary line is logged every N forwards and at destruction. When off, a Scope
// costs one branch.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <vector>

namespace qed::cuda {

class StepTimer {
 public:
  StepTimer();  // reads QED_CUDA_STEP_TIMING
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

  bool enabled() const { return every_ > 0; }

  // Brackets one forward(). The forward calls mark_device_end() after its last device work is enqueued and before
  // its final stream synchronization, so the stop event times the device and not the host's wait.
  class Scope {
   public:
    Scope(StepTimer& timer, cudaStream_t stream);
    ~Scope();

   private:
    StepTimer& timer_;
    cudaStream_t stream_;
    std::chrono::steady_clock::time_point entered_;
  };
  void mark_device_end(cudaStream_t stream);

 private:
  using Clock = std::chrono::steady_clock;
  bool create_events();
  void finish(Clock::time_point entered, Clock::time_point returned);
  void log_window();

  int every_ = 0;
  bool in_scope_ = false, end_marked_ = false;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  bool have_return_ = false;
  Clock::time_point last_return_;
  // This window's samples, in ms.
  std::vector<double> device_ms_, forward_ms_, gap_ms_;
  int64_t total_forwards_ = 0;
};

}  // namespace qed::cuda
