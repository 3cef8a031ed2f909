#include "server/tir_session.h"

#include <algorithm>
#include <exception>

#include "tir/code_tags.h"

namespace qed::server {

TirSession::TirSession(const TirContext& context, tir::ToolLimits limits, int num_samples, const Tokenizer& tokenizer,
                       EngineService& engine)
    : executor_(*context.executor), tokenizer_(tokenizer), engine_(engine) {
  for (int i = 0; i < num_samples; ++i) {
    samples_.push_back(std::make_unique<Sample>());
    samples_.back()->loop = std::make_unique<tir::ToolLoop>(*context.sandbox, limits);
  }
}

void TirSession::configure(SamplingParams& params) {
  const tir::CodeTags tags;
  if (std::find(params.hold.begin(), params.hold.end(), tags.code_end) == params.hold.end()) {
    params.hold.push_back(tags.code_end);
  }
}

void TirSession::on_hold(RequestId id, int index, std::string generation) {
  executor_.post([self = shared_from_this(), id, index, generation = std::move(generation)] {
    if (self->finished_) return;
    Sample& sample = *self->samples_[static_cast<size_t>(index)];
    std::optional<std::vector<int32_t>> tokens;
    try {
      std::lock_guard lock(sample.mutex);
      // Checked again under the lock: the session delete of a request that ended meanwhile may have run first.
      if (self->finished_) return;
      const int timeouts_before = sample.loop->timeouts();
      const auto block = sample.loop->run(generation);
      if (block) {
        ++self->executions_;
        self->timeouts_ += sample.loop->timeouts() - timeouts_before;
        tokens = self->tokenizer_.encode(*block, false);
      }
    } catch (const std::exception& e) {  // whatever it is, the held sample must not wait forever
      {
        std::lock_guard lock(self->mutex_);
        if (self->error_.empty()) self->error_ = e.what();
      }
      self->engine_.abort(id);
      return;
    }
    self->engine_.resume(id, index, std::move(tokens));
  });
}

void TirSession::on_finish() {
  finished_ = true;
  // Jobs of this session run in order per sample only if posted in order; a queued one sees finished_ and skips.
  executor_.post([self = shared_from_this()] {
    for (auto& sample : self->samples_) {
      std::lock_guard lock(sample->mutex);
      sample->loop->close();
    }
  });
}

std::string TirSession::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

int TirSession::executions() const {
  return executions_.load();
}

int TirSession::timeouts() const {
  return timeouts_.load();
}

}  // namespace qed::server
