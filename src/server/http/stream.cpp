#include "server/http/stream.h"

#include <utility>

namespace qed::http {

void ClientWatch::on_disconnect(std::function<void()> callback) {
  {
    std::lock_guard lock(mutex_);
    if (!disconnected_) {
      callback_ = std::move(callback);
      return;
    }
  }
  callback();
}

bool ClientWatch::disconnected() const {
  std::lock_guard lock(mutex_);
  return disconnected_;
}

void ClientWatch::notify_disconnected() {
  std::function<void()> callback;
  {
    std::lock_guard lock(mutex_);
    if (disconnected_) return;
    disconnected_ = true;
    callback.swap(callback_);
  }
  if (callback) callback();  // outside the lock: it may abort work that calls back into this object
}

bool ResponseStream::write(std::string chunk) {
  std::unique_lock lock(mutex_);
  if (cancelled_ || closed_) return false;
  if (pending_.size() + chunk.size() > max_buffered_) {
    cancelled_ = true;
    pending_.clear();
    wake(lock);
    return false;
  }
  pending_ += chunk;
  wake(lock);
  return true;
}

void ResponseStream::close() {
  std::unique_lock lock(mutex_);
  if (closed_) return;
  closed_ = true;
  wake(lock);
}

bool ResponseStream::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

void ResponseStream::set_waker(std::function<void()> waker) {
  std::lock_guard lock(mutex_);
  waker_ = std::move(waker);
}

ResponseStream::Taken ResponseStream::take() {
  std::lock_guard lock(mutex_);
  Taken taken;
  taken.data.swap(pending_);
  taken.closed = closed_ || cancelled_;
  return taken;
}

void ResponseStream::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  pending_.clear();
  waker_ = nullptr;
}

void ResponseStream::wake(std::unique_lock<std::mutex>& lock) {
  auto waker = waker_;
  lock.unlock();
  if (waker) waker();
}

}  // namespace qed::http
