#pragma once
// The engine on its own thread for the server: submissions and aborts from the HTTP threads go through an inbox
// applied between steps (as EngineLoop), and after every step the loop publishes a snapshot of the engine's
// load (KV blocks in use, queue lengths) that /metrics reads without touching the engine from another thread.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <variant>
#include <vector>

#include "engine/engine.h"

namespace qed::server {

struct EngineSnapshot {
  int kv_used_blocks = 0;
  int kv_total_blocks = 0;
  int num_waiting = 0;  // sequences waiting for admission
  int num_running = 0;
  int num_requests = 0;  // submitted and not yet finished (inbox included)
  EngineStats stats;
};

class EngineService {
 public:
  explicit EngineService(Engine& engine);
  ~EngineService();  // aborts what is unfinished and joins the thread
  EngineService(const EngineService&) = delete;
  EngineService& operator=(const EngineService&) = delete;

  // Validates on the caller's thread (throws qed::Error); callbacks run on the engine thread.
  RequestId submit(std::vector<int32_t> prompt, const SamplingParams& params, RequestCallbacks callbacks);
  void abort(RequestId id);
  // Engine::resume of a held sequence with `tokens`, or Engine::stop_held when there are none (any thread).
  // Token ids must be in the vocabulary (the engine thread would throw).
  void resume(RequestId id, int index, std::optional<std::vector<int32_t>> tokens);
  void abort_all();  // shutdown: every unfinished request ends with finish reason "abort"
  EngineSnapshot snapshot() const;

 private:
  struct Submit {
    RequestId id;
    std::vector<int32_t> prompt;
    SamplingParams params;
    RequestCallbacks callbacks;
  };
  struct Abort {
    RequestId id;
    bool all = false;
  };
  struct Resume {
    RequestId id;
    int index;
    std::optional<std::vector<int32_t>> tokens;
  };
  void run();
  void publish();

  Engine& engine_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::variant<Submit, Abort, Resume>> inbox_;
  bool stopping_ = false;
  int in_flight_ = 0;  // submitted, on_finish not yet run
  EngineSnapshot snapshot_;
  std::thread thread_;
};

}  // namespace qed::server
