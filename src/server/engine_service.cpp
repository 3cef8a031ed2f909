#include "server/engine_service.h"

#include <memory>

#include "core/error.h"

namespace qed::server {

EngineService::EngineService(Engine& engine) : engine_(engine) {
  publish();
  thread_ = std::thread([this] { run(); });
}

EngineService::~EngineService() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

RequestId EngineService::submit(std::vector<int32_t> prompt, const SamplingParams& params, RequestCallbacks callbacks) {
  engine_.validate(prompt, params);
  const RequestId id = engine_.reserve_request_id();
  // Count the request until its result is handed out, so the snapshot's queue never misses one in the inbox.
  auto on_finish = std::move(callbacks.on_finish);
  callbacks.on_finish = [this, on_finish = std::move(on_finish)](RequestResult&& result) {
    {
      std::lock_guard lock(mutex_);
      --in_flight_;
    }
    if (on_finish) on_finish(std::move(result));
  };
  {
    std::lock_guard lock(mutex_);
    ++in_flight_;
    inbox_.emplace_back(Submit{id, std::move(prompt), params, std::move(callbacks)});
  }
  wake_.notify_all();
  return id;
}

void EngineService::abort(RequestId id) {
  {
    std::lock_guard lock(mutex_);
    inbox_.emplace_back(Abort{id, false});
  }
  wake_.notify_all();
}

void EngineService::resume(RequestId id, int index, std::optional<std::vector<int32_t>> tokens) {
  {
    std::lock_guard lock(mutex_);
    inbox_.emplace_back(Resume{id, index, std::move(tokens)});
  }
  wake_.notify_all();
}

void EngineService::abort_all() {
  {
    std::lock_guard lock(mutex_);
    inbox_.emplace_back(Abort{0, true});
  }
  wake_.notify_all();
}

EngineSnapshot EngineService::snapshot() const {
  std::lock_guard lock(mutex_);
  EngineSnapshot s = snapshot_;
  s.num_requests = in_flight_;
  return s;
}

// Engine thread only: reads the engine between steps.
void EngineService::publish() {
  EngineSnapshot s;
  s.kv_used_blocks = engine_.block_manager().num_used_blocks();
  s.kv_total_blocks = engine_.block_manager().num_blocks();
  s.num_waiting = static_cast<int>(engine_.scheduler().num_waiting());
  s.num_running = static_cast<int>(engine_.scheduler().num_running());
  s.stats = engine_.stats();
  std::lock_guard lock(mutex_);
  snapshot_ = s;
}

void EngineService::run() {
  for (;;) {
    std::deque<std::variant<Submit, Abort, Resume>> inbox;
    bool stopping = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !inbox_.empty() || engine_.has_runnable(); });
      inbox.swap(inbox_);
      stopping = stopping_;
    }
    for (auto& item : inbox) {
      if (auto* s = std::get_if<Submit>(&item)) {
        engine_.add_request(s->id, std::move(s->prompt), s->params, std::move(s->callbacks));
      } else if (auto* r = std::get_if<Resume>(&item)) {
        if (r->tokens) {
          try {
            engine_.resume(r->id, r->index, std::move(*r->tokens));
          } catch (const Error&) {
            engine_.abort(r->id);  // ids outside the vocabulary: a caller bug, not worth the engine thread
          }
        } else {
          engine_.stop_held(r->id, r->index);
        }
      } else if (const auto& a = std::get<Abort>(item); a.all) {
        engine_.abort_all();
      } else {
        engine_.abort(a.id);
      }
    }
    if (stopping) break;
    if (engine_.has_runnable()) engine_.step();
    publish();
  }
  engine_.abort_all();
  publish();
}

}  // namespace qed::server
