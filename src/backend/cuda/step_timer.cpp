#include "backend/cuda/step_timer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <numeric>
#include <string>

#include "backend/cuda/env_switch.h"

namespace qed::cuda {
namespace {

double mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
  return v[v.size() / 2];
}

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

StepTimer::StepTimer() {
  every_ = std::max(0, env_int("QED_CUDA_STEP_TIMING", 0));
}

bool StepTimer::create_events() {
  // Lazily, on the first forward: the backend selects its device in its constructor's body, after members exist.
  if (start_ && stop_) return true;
  if (cudaEventCreate(&start_) != cudaSuccess || cudaEventCreate(&stop_) != cudaSuccess) {
    cudaGetLastError();
    spdlog::warn("QED_CUDA_STEP_TIMING: could not create CUDA events; step timing is off");
    every_ = 0;
    return false;
  }
  return true;
}

StepTimer::~StepTimer() {
  if (enabled() && !device_ms_.empty()) log_window();
  if (start_) cudaEventDestroy(start_);
  if (stop_) cudaEventDestroy(stop_);
}

StepTimer::Scope::Scope(StepTimer& timer, cudaStream_t stream) : timer_(timer), stream_(stream) {
  if (!timer_.enabled() || !timer_.create_events()) return;
  entered_ = Clock::now();
  timer_.in_scope_ = true;
  timer_.end_marked_ = false;
  cudaEventRecord(timer_.start_, stream_);
}

void StepTimer::mark_device_end(cudaStream_t stream) {
  if (!in_scope_ || end_marked_) return;
  end_marked_ = true;
  cudaEventRecord(stop_, stream);
}

StepTimer::Scope::~Scope() {
  if (!timer_.in_scope_) return;
  timer_.mark_device_end(stream_);  // a forward that returned early without marking: after its wait
  timer_.in_scope_ = false;
  // forward() has synchronized by now (or is unwinding an error): the stop event is complete or failed.
  timer_.finish(entered_, Clock::now());
}

void StepTimer::finish(Clock::time_point entered, Clock::time_point returned) {
  float device = 0.0f;
  if (cudaEventSynchronize(stop_) != cudaSuccess || cudaEventElapsedTime(&device, start_, stop_) != cudaSuccess) {
    cudaGetLastError();
    return;  // an error is being reported by the forward itself
  }
  device_ms_.push_back(double(device));
  forward_ms_.push_back(ms_between(entered, returned));
  if (have_return_) gap_ms_.push_back(ms_between(last_return_, entered));
  last_return_ = returned;
  have_return_ = true;
  ++total_forwards_;
  if (int64_t(device_ms_.size()) >= every_) log_window();
}

void StepTimer::log_window() {
  const double device = mean(device_ms_), forward = mean(forward_ms_), gap = mean(gap_ms_);
  const double step = forward + gap;
  spdlog::info(
      "cuda step timing, {} forwards (up to #{}): device {:.3f} ms mean ({:.3f} median), forward() wall {:.3f} ms, "
      "host gap between forwards {:.3f} ms mean ({:.3f} median); GPU busy {:.1f}% of the step",
      device_ms_.size(), total_forwards_, device, median(device_ms_), forward, gap, median(gap_ms_),
      step > 0 ? 100.0 * device / step : 0.0);
  device_ms_.clear();
  forward_ms_.clear();
  gap_ms_.clear();
}

}  // namespace qed::cuda
