#include "engine/engine_loop.h"

#include <memory>

namespace qed {

EngineLoop::EngineLoop(Engine& engine) : engine_(engine), thread_([this] { run(); }) {}

EngineLoop::~EngineLoop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

RequestId EngineLoop::submit(std::vector<int32_t> prompt, const SamplingParams& params, RequestCallbacks callbacks) {
  engine_.validate(prompt, params);
  const RequestId id = engine_.reserve_request_id();
  {
    std::lock_guard lock(mutex_);
    inbox_.emplace_back(Submit{id, std::move(prompt), params, std::move(callbacks)});
  }
  wake_.notify_all();
  return id;
}

std::future<RequestResult> EngineLoop::generate(std::vector<int32_t> prompt, const SamplingParams& params,
                                                std::function<void(const TokenEvent&)> on_token) {
  auto promise = std::make_shared<std::promise<RequestResult>>();
  auto future = promise->get_future();
  RequestCallbacks callbacks;
  callbacks.on_token = std::move(on_token);
  callbacks.on_finish = [promise](RequestResult&& result) { promise->set_value(std::move(result)); };
  submit(std::move(prompt), params, std::move(callbacks));
  return future;
}

void EngineLoop::abort(RequestId id) {
  {
    std::lock_guard lock(mutex_);
    inbox_.emplace_back(Abort{id});
  }
  wake_.notify_all();
}

void EngineLoop::run() {
  for (;;) {
    std::deque<std::variant<Submit, Abort>> inbox;
    bool stopping = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !inbox_.empty() || engine_.has_runnable(); });
      inbox.swap(inbox_);
      stopping = stopping_;
    }
    // Submissions and aborts apply in the order they were made, between steps.
    for (auto& item : inbox) {
      if (auto* s = std::get_if<Submit>(&item)) {
        engine_.add_request(s->id, std::move(s->prompt), s->params, std::move(s->callbacks));
      } else {
        engine_.abort(std::get<Abort>(item).id);
      }
    }
    if (stopping) break;
    if (engine_.has_runnable()) engine_.step();
  }
  engine_.abort_all();
}

}  // namespace qed
