#pragma once
// Live ipython sessions by id: each owns at most one worker, runs one call at a time, and is closed on DELETE,
// on idle expiry or at shutdown. A session whose worker died keeps its id; the next call gets a fresh worker
// and is told so (new_session_created), as NeMo-Skills' client expects.
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sandbox/worker_process.h"

namespace qed::sandbox {

struct Session {
  explicit Session(std::string session_id, double now) : id(std::move(session_id)), created(now), last_used(now) {}

  // Kills the current worker if any (thread-safe with a call in progress, which then reports a crash).
  void kill_worker();

  const std::string id;
  const double created;           // unix seconds
  std::atomic<double> last_used;  // unix seconds
  std::atomic<bool> busy{false};
  std::atomic<bool> closed{false};
  std::mutex run_mutex;          // held for a whole call: calls on one session queue up
  bool restart_pending = false;  // guarded by run_mutex
  std::mutex worker_mutex;       // guards the pointer (swapped by run, killed by delete)
  std::unique_ptr<WorkerProcess> worker;
};

struct SessionInfo {
  std::string id;
  double created;
  double last_used;
  bool busy;
};

class SessionManager {
 public:
  SessionManager(size_t max_sessions, double idle_seconds);
  ~SessionManager();  // closes every session
  SessionManager(const SessionManager&) = delete;
  SessionManager& operator=(const SessionManager&) = delete;

  // The session for `id`, created when absent (second: true). Throws HttpError(503) past max_sessions.
  std::pair<std::shared_ptr<Session>, bool> acquire(const std::string& id);
  // Closes and forgets the session; false when there is none.
  bool remove(const std::string& id);
  // Kills every session's worker (shutdown): calls in progress end at once with a crash outcome.
  void close_all();
  std::vector<SessionInfo> list() const;
  size_t size() const;
  uint64_t expired() const { return expired_; }

  static double now();

 private:
  void reap_loop();

  size_t max_sessions_;
  double idle_seconds_;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<uint64_t> expired_{0};
  std::thread reaper_;
};

}  // namespace qed::sandbox
