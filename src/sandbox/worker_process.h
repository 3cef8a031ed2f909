#pragma once
// One jailed interpreter (worker.py) and the pipes to it. Runs one request at a time; the caller serialises.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "sandbox/capped_buffer.h"
#include "sandbox/process_spawner.h"
#include "sandbox/sandbox_config.h"

namespace qed::sandbox {

enum class RunMode { Cell, Script };

struct RunRequest {
  RunMode mode = RunMode::Cell;
  std::string code;
  std::string stdin_text;     // Script mode only
  double timeout_s = 10.0;    // wall clock; KeyboardInterrupt in the cell at this point
  double kill_grace_s = 0.5;  // then SIGKILL of the whole jail
  size_t keep_chars = 2024;   // per stream: the worker stops writing after this many characters
};

enum class RunOutcome {
  Completed,    // the code ran to its end (Script: also when it raised; tracebacks are on stderr)
  Error,        // a cell raised (traceback on stdout, as IPython prints it)
  Interrupted,  // the deadline hit and the cell stopped at KeyboardInterrupt; the session is intact
  Killed,       // the deadline + grace passed without an answer: the jail was killed
  Crashed,      // the worker died or broke protocol (segfault, os._exit, killed from inside...)
};

struct RunResult {
  RunOutcome outcome = RunOutcome::Crashed;
  std::string stdout_bytes;  // at most keep_chars*4 bytes + what fits in one read
  std::string stderr_bytes;
  std::string detail;  // why a Crashed worker is considered dead
};

class WorkerProcess {
 public:
  // Starts a worker and waits until it reports ready (its pre-imports done). Throws qed::Error carrying the
  // worker's stderr (bwrap's complaint, a Python error) when it does not come up within `startup_timeout`.
  static std::unique_ptr<WorkerProcess> start(ProcessSpawner& spawner, const JailConfig& jail,
                                              const std::vector<uint8_t>& seccomp_bpf, const std::string& worker_source,
                                              const std::vector<std::string>& preimport,
                                              std::chrono::duration<double> startup_timeout);
  ~WorkerProcess();  // kills and reaps
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  RunResult run(const RunRequest& request);
  // Thread-safe: SIGKILL to the jail's process group; a concurrent run() returns Crashed.
  void kill();
  bool alive() const { return !dead_; }
  pid_t pid() const { return pid_; }

 private:
  WorkerProcess() = default;
  void reap();

  pid_t pid_ = -1;
  int requests_ = -1;  // service → worker
  int replies_ = -1;   // worker → service
  int stdout_ = -1;
  int stderr_ = -1;
  std::string reply_buffer_;
  uint64_t next_seq_ = 1;
  std::atomic<bool> dead_{false};
  bool reaped_ = false;
};

}  // namespace qed::sandbox
