#include "sandbox/process_spawner.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace qed::sandbox {

namespace {

// Everything below runs in the forked child of a multi-threaded parent: async-signal-safe calls only.
[[noreturn]] void exec_child(const char* path, char* const* argv, char* const* envp,
                             const std::vector<std::pair<int, int>>& fds,
                             const std::vector<std::pair<int, rlim_t>>& rlimits,
                             const std::optional<std::pair<uid_t, gid_t>>& drop_to, pid_t parent) {
  setsid();
  // Move every source fd above the target range first so that installing one never clobbers another.
  int moved[16];
  size_t count = fds.size() < 16 ? fds.size() : 16;
  for (size_t i = 0; i < count; ++i) {
    moved[i] = fcntl(fds[i].second, F_DUPFD_CLOEXEC, 64);
    if (moved[i] < 0) _exit(126);
  }
  for (size_t i = 0; i < count; ++i) {
    if (dup2(moved[i], fds[i].first) < 0) _exit(126);  // dup2 clears FD_CLOEXEC on the target
  }
  int highest = 0;
  for (size_t i = 0; i < count; ++i) highest = fds[i].first > highest ? fds[i].first : highest;
  syscall(SYS_close_range, highest + 1, ~0U, 0);

  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGALRM, SIGCHLD, SIGUSR1, SIGUSR2, SIGQUIT}) {
    sigaction(sig, &dfl, nullptr);
  }
  for (const auto& [resource, value] : rlimits) {
    struct rlimit limit {
      value, value
    };
    if (setrlimit(resource, &limit) != 0) _exit(126);
  }
  if (drop_to) {
    if (setgroups(0, nullptr) != 0 || setresgid(drop_to->second, drop_to->second, drop_to->second) != 0 ||
        setresuid(drop_to->first, drop_to->first, drop_to->first) != 0) {
      _exit(126);
    }
  }
  // After any credential change (it clears the setting): the jail dies when the spawner thread does.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(126);  // the parent died before PDEATHSIG was armed
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  execve(path, argv, envp);
  _exit(127);
}

}  // namespace

ProcessSpawner::ProcessSpawner() : thread_([this] { loop(); }) {}

ProcessSpawner::~ProcessSpawner() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void ProcessSpawner::loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty() && stopping_) return;
    auto task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    lock.lock();
  }
}

pid_t ProcessSpawner::spawn(const SpawnSpec& spec) {
  std::packaged_task<pid_t()> task([&spec] {
    // argv/envp are built before fork: the child must not allocate.
    std::vector<char*> argv;
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    if (spec.fds.size() > 16) fail("spawn {}: at most 16 inherited descriptors", spec.path);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) fail("spawn {}: fork failed: {}", spec.path, std::strerror(errno));
    if (pid == 0) exec_child(spec.path.c_str(), argv.data(), envp.data(), spec.fds, spec.rlimits, spec.drop_to, parent);
    return pid;
  });
  auto result = task.get_future();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) fail("spawn {}: spawner is shutting down", spec.path);
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
  return result.get();
}

}  // namespace qed::sandbox
