#include "tir/sandbox_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <regex>

#include "core/error.h"

namespace qed::tir {

SandboxProcess::SandboxProcess(std::vector<std::string> argv, std::chrono::seconds startup_timeout) {
  if (argv.empty()) fail("sandbox: no command to start");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) fail("sandbox: pipe failed: {}", std::strerror(errno));
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) {
    close(fds[0]);
    close(fds[1]);
    fail("sandbox: fork failed: {}", std::strerror(errno));
  }
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);  // the parent died before prctl took effect
    setpgid(0, 0);                      // its own group: a terminal's Ctrl-C reaches us, and we stop it in order
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  out_fd_ = fds[0];

  // Read lines until the listening line, the child's exit or the deadline.
  const std::regex listening(R"(listening on (http://[\d.]+:\d+))");
  const auto deadline = std::chrono::steady_clock::now() + startup_timeout;
  std::string buffer;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      stop();
      fail("sandbox: `{}` did not report its port within {} s; its output: {}", argv[0], startup_timeout.count(),
           last_output());
    }
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[4096];
    const ssize_t n = read(out_fd_, chunk, sizeof chunk);
    if (n <= 0) {
      stop();
      fail("sandbox: `{} {}` exited before it was ready; its output: {}", argv[0], argv.size() > 1 ? argv[1] : "",
           last_output());
    }
    buffer.append(chunk, static_cast<size_t>(n));
    size_t eol;
    while ((eol = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, eol);
      buffer.erase(0, eol + 1);
      {
        std::lock_guard lock(mutex_);
        tail_.push_back(line);
        if (tail_.size() > 20) tail_.pop_front();
      }
      std::smatch m;
      if (std::regex_search(line, m, listening)) {
        address_ = parse_sandbox_url(m[1].str());
        drain_thread_ = std::thread([this] { drain(); });
        if (!SandboxClient(address_).healthy()) {
          stop();
          fail("sandbox: {} does not answer /health; its output: {}", address_.url, last_output());
        }
        return;
      }
    }
  }
}

SandboxProcess::~SandboxProcess() {
  stop();
}

void SandboxProcess::drain() {
  char chunk[4096];
  std::string buffer;
  // Polls so stop() can end it even if a grandchild still holds the pipe open.
  while (!stopping_) {
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = read(out_fd_, chunk, sizeof chunk);
    if (n <= 0) return;
    buffer.append(chunk, static_cast<size_t>(n));
    size_t eol;
    while ((eol = buffer.find('\n')) != std::string::npos) {
      std::lock_guard lock(mutex_);
      tail_.push_back(buffer.substr(0, eol));
      if (tail_.size() > 20) tail_.pop_front();
      buffer.erase(0, eol + 1);
    }
  }
}

// The child's last lines on one line, so the caller's error stays one line.
std::string SandboxProcess::last_output() const {
  std::lock_guard lock(mutex_);
  std::string out;
  const size_t first = tail_.size() > 5 ? tail_.size() - 5 : 0;
  for (size_t i = first; i < tail_.size(); ++i) out += (out.empty() ? "" : " | ") + tail_[i];
  return out.empty() ? "(no output)" : out;
}

void SandboxProcess::stop() noexcept {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    // Up to 10 s for a clean exit (it stops its session workers), then SIGKILL.
    int status = 0;
    bool exited = false;
    for (int i = 0; i < 200 && !exited; ++i) {
      exited = waitpid(pid_, &status, WNOHANG) == pid_;
      if (!exited) usleep(50'000);
    }
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }
  stopping_ = true;
  if (drain_thread_.joinable()) drain_thread_.join();
  if (out_fd_ >= 0) {
    close(out_fd_);
    out_fd_ = -1;
  }
}

}  // namespace qed::tir
