#pragma once
// Every knob of `qed sandbox`, with its default, in one place; CLI flags map 1:1 onto these fields.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qed::sandbox {

struct JailLimits {
  size_t memory_mb = 2048;      // RLIMIT_AS of the interpreter (virtual memory: numpy/sympy need ~300 MB)
  size_t cpu_seconds = 600;     // RLIMIT_CPU over the session's lifetime (the per-call limit is wall clock)
  size_t max_processes = 32;    // RLIMIT_NPROC inside the session's user namespace (threads count too)
  size_t max_open_files = 256;  // RLIMIT_NOFILE
  size_t max_file_mb = 64;      // RLIMIT_FSIZE: largest single file
  // Size of the private /tmp (home is a link into it). tmpfs, so host RAM: a session pins at most this plus
  // a 16 MiB /dev/shm.
  size_t tmpfs_mb = 128;
};

struct JailConfig {
  bool insecure_no_jail = false;  // development only: no namespaces, no seccomp (rlimits still apply)
  std::string python = "/usr/bin/python3";
  std::string bwrap;  // resolved at startup (PATH lookup of "bwrap") unless set
  // Host uid/gid the jail runs as when the service runs as root: RLIMIT_NPROC does not bind uid 0, and a jail
  // must own nothing on the host. Ignored when the service is not root (the jail then maps to its uid).
  uint32_t jail_uid = 65534;
  uint32_t jail_gid = 65534;
  std::vector<std::string> preimport = {"sympy", "numpy"};  // imported before a worker reports ready
  JailLimits limits;
};

struct SandboxConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 6000;             // NeMo-Skills' default sandbox port
  size_t warm_workers = 4;          // pre-started interpreters kept ready
  size_t max_sessions = 512;        // live ipython sessions; beyond this /execute answers 503
  double default_timeout_s = 10.0;  // when a request carries no "timeout"
  double max_timeout_s = 600.0;     // requests asking for more are clamped
  size_t default_max_output_chars = 1000;
  double session_idle_s = 1800.0;   // idle sessions are closed (0: never)
  double kill_grace_s = 0.5;        // after the timeout: time for KeyboardInterrupt before SIGKILL
  double startup_timeout_s = 60.0;  // a worker must report ready within this
  size_t max_body_bytes = 16 * 1024 * 1024;
  int io_threads = 2;
  JailConfig jail;
};

}  // namespace qed::sandbox
