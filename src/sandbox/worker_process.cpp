#include "sandbox/worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "sandbox/jail.h"

namespace qed::sandbox {

namespace {

using Clock = std::chrono::steady_clock;

// A pipe whose ends close on exec; the spawner dup2()s the child's ends into place.
std::array<int, 2> make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) fail("sandbox: pipe2 failed: {}", std::strerror(errno));
  return {fds[0], fds[1]};
}

void set_nonblocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

// The longest reply line we accept; anything longer is a worker that lost its mind (or user code forging).
constexpr size_t kMaxReplyBytes = 64 * 1024;

// Reads what is available into `into`; returns false at EOF or on a hard error. Stops after 1 MiB per call:
// a writer as fast as we read must not keep us from checking the deadline.
bool drain(int fd, CappedBuffer& into) {
  char buf[65536];
  for (int reads = 0; reads < 16; ++reads) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      into.append(std::string_view(buf, static_cast<size_t>(n)));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
  return true;
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left > 1000 ? 1000 : left) + (left > 1000 ? 0 : 1);
}

}  // namespace

std::unique_ptr<WorkerProcess> WorkerProcess::start(ProcessSpawner& spawner, const JailConfig& jail,
                                                    const std::vector<uint8_t>& seccomp_bpf,
                                                    const std::string& worker_source,
                                                    const std::vector<std::string>& preimport,
                                                    std::chrono::duration<double> startup_timeout) {
  std::unique_ptr<WorkerProcess> w(new WorkerProcess());
  auto requests = make_pipe();
  auto replies = make_pipe();
  auto out = make_pipe();
  auto err = make_pipe();
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int seccomp_fd = -1;
  if (!jail.insecure_no_jail) {
    // A fresh memfd per worker: bwrap reads the program from the fd's current offset.
    seccomp_fd = memfd_create("qed-seccomp", MFD_CLOEXEC);
    if (seccomp_fd < 0 ||
        write(seccomp_fd, seccomp_bpf.data(), seccomp_bpf.size()) != static_cast<ssize_t>(seccomp_bpf.size()) ||
        lseek(seccomp_fd, 0, SEEK_SET) != 0) {
      fail("sandbox: cannot stage the seccomp program: {}", std::strerror(errno));
    }
  }
  WorkerFds fds{devnull, out[1], err[1], requests[0], replies[1], seccomp_fd};
  SpawnSpec spec = worker_spawn_spec(jail, fds, worker_source, preimport);
  pid_t pid = -1;
  std::string spawn_error;
  try {
    pid = spawner.spawn(spec);
  } catch (const Error& e) {
    spawn_error = e.what();
  }
  // The child has its copies; the parent keeps only its own ends.
  for (int fd : {requests[0], replies[1], out[1], err[1], devnull, seccomp_fd}) {
    if (fd >= 0) close(fd);
  }
  w->requests_ = requests[1];
  w->replies_ = replies[0];
  w->stdout_ = out[0];
  w->stderr_ = err[0];
  if (pid < 0) fail("{}", spawn_error);
  w->pid_ = pid;
  for (int fd : {w->requests_, w->replies_, w->stdout_, w->stderr_}) set_nonblocking(fd);

  // Wait for {"ready": true}, collecting stderr for the error message if it never comes.
  CappedBuffer out_text(16 * 1024), err_text(16 * 1024);
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(startup_timeout);
  while (true) {
    size_t nl = w->reply_buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = w->reply_buffer_.substr(0, nl);
      w->reply_buffer_.erase(0, nl + 1);
      if (line.find("\"ready\"") != std::string::npos) return w;
    }
    if (Clock::now() >= deadline) {
      w->kill();
      fail("sandbox: worker did not become ready within {:.0f} s; its stderr: {}", startup_timeout.count(),
           err_text.data().empty() ? "(empty)" : err_text.data());
    }
    pollfd p[3] = {{w->replies_, POLLIN, 0}, {w->stdout_, POLLIN, 0}, {w->stderr_, POLLIN, 0}};
    poll(p, 3, remaining_ms(deadline));
    drain(w->stdout_, out_text);
    bool err_open = drain(w->stderr_, err_text);
    char buf[4096];
    ssize_t n = read(w->replies_, buf, sizeof buf);
    if (n > 0) w->reply_buffer_.append(buf, static_cast<size_t>(n));
    if (n == 0 || (!err_open && n < 0)) {
      // The worker exited during startup: typically bwrap refusing (no user namespaces) or a failing import.
      drain(w->stderr_, err_text);
      w->kill();
      int status = 0;
      while (waitpid(w->pid_, &status, 0) < 0 && errno == EINTR) {
      }
      w->reaped_ = true;
      std::string why = err_text.data();
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      if (why.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        why = "could not execute " + spec.path + " (exit status 127)";
      } else if (why.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 126) {
        why = "setting up the process (descriptors, rlimits, uid) failed before exec (exit status 126)";
      }
      fail("sandbox: worker exited during startup: {}", why.empty() ? "(no stderr)" : why);
    }
  }
}

WorkerProcess::~WorkerProcess() {
  kill();
  reap();
  close_fd(requests_);
  close_fd(replies_);
  close_fd(stdout_);
  close_fd(stderr_);
}

void WorkerProcess::kill() {
  dead_ = true;
  // setsid() in the child made the bwrap (or python) pid a process-group leader. Killing bwrap tears down the
  // pid namespace, which kills everything the code started.
  if (pid_ > 0) ::kill(-pid_, SIGKILL);
}

void WorkerProcess::reap() {
  if (pid_ > 0 && !reaped_) {
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
}

RunResult WorkerProcess::run(const RunRequest& request) {
  RunResult result;
  if (dead_) {
    result.detail = "worker is not running";
    return result;
  }
  const uint64_t seq = next_seq_++;
  nlohmann::json message = {{"seq", seq},
                            {"mode", request.mode == RunMode::Cell ? "cell" : "script"},
                            {"code", request.code},
                            {"stdin", request.stdin_text},
                            {"timeout", request.timeout_s},
                            {"cap", request.keep_chars}};
  std::string pending = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  size_t written = 0;
  // Up to 4 UTF-8 bytes per character the worker lets through, plus room for raw writes to fd 1/2.
  CappedBuffer out(request.keep_chars * 4 + 4096), err(request.keep_chars * 4 + 4096);
  auto start = Clock::now();
  auto hard_deadline = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(request.timeout_s + request.kill_grace_s));

  auto finish_crashed = [&](std::string why) {
    kill();
    drain(stdout_, out);
    drain(stderr_, err);
    result.outcome = RunOutcome::Crashed;
    result.detail = std::move(why);
    result.stdout_bytes = out.data();
    result.stderr_bytes = err.data();
    return result;
  };

  while (true) {
    if (dead_) return finish_crashed("worker was killed");
    pollfd p[4] = {{replies_, POLLIN, 0},
                   {stdout_, POLLIN, 0},
                   {stderr_, POLLIN, 0},
                   {requests_, static_cast<short>(written < pending.size() ? POLLOUT : 0), 0}};
    int ready = poll(p, 4, remaining_ms(hard_deadline));
    if (ready < 0 && errno != EINTR) return finish_crashed(std::string("poll failed: ") + std::strerror(errno));
    if (written < pending.size() && (p[3].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = write(requests_, pending.data() + written, pending.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) return finish_crashed("worker closed its request pipe");
    }
    bool out_open = drain(stdout_, out);
    bool err_open = drain(stderr_, err);
    char buf[4096];
    ssize_t n = read(replies_, buf, sizeof buf);
    if (n > 0) reply_buffer_.append(buf, static_cast<size_t>(n));
    size_t nl = reply_buffer_.find('\n');
    while (nl != std::string::npos) {
      nlohmann::json reply = nlohmann::json::parse(reply_buffer_.substr(0, nl), nullptr, false);
      reply_buffer_.erase(0, nl + 1);
      if (reply.is_discarded() || !reply.is_object() || !reply.contains("status")) {
        return finish_crashed("worker sent a malformed reply");
      }
      if (!reply.contains("seq") || reply["seq"] != seq) {
        nl = reply_buffer_.find('\n');  // a stale or forged line: not the answer to this call
        continue;
      }
      // The worker flushed stdout/stderr before replying: what it wrote is already in the pipes.
      drain(stdout_, out);
      drain(stderr_, err);
      std::string status = reply["status"].is_string() ? reply["status"].get<std::string>() : "";
      result.outcome = status == "completed"     ? RunOutcome::Completed
                       : status == "error"       ? RunOutcome::Error
                       : status == "interrupted" ? RunOutcome::Interrupted
                                                 : RunOutcome::Crashed;
      if (result.outcome == RunOutcome::Crashed) return finish_crashed("worker sent an unknown status");
      result.stdout_bytes = out.data();
      result.stderr_bytes = err.data();
      return result;
    }
    if (reply_buffer_.size() > kMaxReplyBytes) return finish_crashed("worker reply too long");
    if (n == 0 || (!out_open && !err_open && n < 0 && errno != EAGAIN)) {
      return finish_crashed("worker exited during the call");
    }
    if (Clock::now() >= hard_deadline) {
      kill();
      drain(stdout_, out);
      drain(stderr_, err);
      result.outcome = RunOutcome::Killed;
      result.stdout_bytes = out.data();
      result.stderr_bytes = err.data();
      return result;
    }
  }
}

}  // namespace qed::sandbox
