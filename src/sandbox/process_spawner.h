#pragma once
// fork+exec on one long-lived thread. Why a thread: PR_SET_PDEATHSIG fires when the *thread* that forked a child
// exits, and request threads come and go; the spawner thread lives as long as the service, so jails die with
// the service and never with a request.
#include <sys/resource.h>
#include <sys/types.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace qed::sandbox {

struct SpawnSpec {
  std::string path;               // absolute executable path
  std::vector<std::string> argv;  // argv[0] included
  std::vector<std::string> env;   // the complete environment ("K=V"); nothing is inherited
  // Child fd number → parent fd to install there (dup2). Every other descriptor is closed before exec.
  std::vector<std::pair<int, int>> fds;
  std::vector<std::pair<int, rlim_t>> rlimits;     // applied in the child before exec (soft = hard)
  std::optional<std::pair<uid_t, gid_t>> drop_to;  // setgroups({}) + setresgid + setresuid before exec
};

class ProcessSpawner {
 public:
  ProcessSpawner();
  ~ProcessSpawner();
  ProcessSpawner(const ProcessSpawner&) = delete;
  ProcessSpawner& operator=(const ProcessSpawner&) = delete;

  // Starts the process (new session + process group, PDEATHSIG=SIGKILL, no_new_privs) and returns its pid.
  // Throws qed::Error when fork fails; exec failures show up as exit status 127 of the child.
  pid_t spawn(const SpawnSpec& spec);

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::packaged_task<pid_t()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace qed::sandbox
