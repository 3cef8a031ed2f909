#include "sandbox/session_manager.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "server/http/http_message.h"

namespace qed::sandbox {

void Session::kill_worker() {
  std::lock_guard lock(worker_mutex);
  if (worker) worker->kill();
}

double SessionManager::now() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
}

SessionManager::SessionManager(size_t max_sessions, double idle_seconds)
    : max_sessions_(max_sessions), idle_seconds_(idle_seconds), reaper_([this] { reap_loop(); }) {}

SessionManager::~SessionManager() {
  std::map<std::string, std::shared_ptr<Session>> all;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    all.swap(sessions_);
  }
  wake_.notify_all();
  reaper_.join();
  for (auto& [id, s] : all) {
    s->closed = true;
    s->kill_worker();
  }
}

std::pair<std::shared_ptr<Session>, bool> SessionManager::acquire(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(id);
  if (it != sessions_.end()) {
    it->second->last_used = now();
    return {it->second, false};
  }
  if (sessions_.size() >= max_sessions_) {
    throw http::HttpError(503, "too many sandbox sessions (" + std::to_string(max_sessions_) +
                                   "); delete finished sessions (DELETE /sessions/{id})");
  }
  auto s = std::make_shared<Session>(id, now());
  sessions_.emplace(id, s);
  return {s, true};
}

bool SessionManager::remove(const std::string& id) {
  std::shared_ptr<Session> s;
  {
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return false;
    s = it->second;
    sessions_.erase(it);
  }
  s->closed = true;
  s->kill_worker();
  return true;
}

void SessionManager::close_all() {
  std::lock_guard lock(mutex_);
  for (auto& [id, s] : sessions_) {
    s->closed = true;
    s->kill_worker();
  }
}

std::vector<SessionInfo> SessionManager::list() const {
  std::lock_guard lock(mutex_);
  std::vector<SessionInfo> out;
  for (const auto& [id, s] : sessions_) out.push_back({id, s->created, s->last_used, s->busy});
  return out;
}

size_t SessionManager::size() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

void SessionManager::reap_loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::seconds(1));
    if (stopping_ || idle_seconds_ <= 0) continue;
    double cutoff = now() - idle_seconds_;
    std::vector<std::shared_ptr<Session>> idle;
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (!it->second->busy && it->second->last_used < cutoff) {
        idle.push_back(it->second);
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
    lock.unlock();
    for (auto& s : idle) {
      spdlog::info("sandbox: session {} idle for more than {:.0f} s, closed", s->id, idle_seconds_);
      s->closed = true;
      s->kill_worker();
      ++expired_;
    }
    lock.lock();
  }
}

}  // namespace qed::sandbox
