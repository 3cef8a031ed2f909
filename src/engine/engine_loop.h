#pragma once
// Runs an Engine's step loop on its own thread. Other threads submit and abort through a queue, so callbacks
// (which run on the loop thread) may themselves submit or abort without deadlocking.
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <variant>
#include <vector>

#include "engine/engine.h"

namespace qed {

class EngineLoop {
 public:
  explicit EngineLoop(Engine& engine);
  ~EngineLoop();  // stops the thread; unfinished requests are aborted
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Validates now (throws qed::Error to the caller); runs on the loop thread from the next step.
  RequestId submit(std::vector<int32_t> prompt, const SamplingParams& params, RequestCallbacks callbacks);
  // The whole result, when it is done (on_token may still stream).
  std::future<RequestResult> generate(std::vector<int32_t> prompt, const SamplingParams& params,
                                      std::function<void(const TokenEvent&)> on_token = {});
  void abort(RequestId id);

 private:
  struct Submit {
    RequestId id;
    std::vector<int32_t> prompt;
    SamplingParams params;
    RequestCallbacks callbacks;
  };
  struct Abort {
    RequestId id;
  };
  void run();

  Engine& engine_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::variant<Submit, Abort>> inbox_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace qed
