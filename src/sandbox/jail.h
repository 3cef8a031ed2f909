#pragma once
// How a worker interpreter is started: the bubblewrap command line (namespaces, read-only /usr, private tmpfs,
// minimal /dev and /proc, no network, cleared environment, seccomp), the rlimits, and the uid it runs as.
#include <string>
#include <vector>

#include "sandbox/process_spawner.h"
#include "sandbox/sandbox_config.h"

namespace qed::sandbox {

// Where the worker finds its pipes (see worker.py).
struct WorkerFds {
  int stdin_fd;         // /dev/null
  int stdout_fd;        // write end of the stdout pipe
  int stderr_fd;        // write end of the stderr pipe
  int requests_fd;      // read end of the request pipe
  int replies_fd;       // write end of the reply pipe
  int seccomp_fd = -1;  // a memfd holding the BPF program (jailed mode only)
};

// Validates the config (bwrap found, python present) and returns it with `bwrap` resolved; throws qed::Error.
JailConfig resolve_jail_config(JailConfig config);

// The full process description for one worker. `worker_source` is worker.py; `preimport` may differ from the
// config's (on-demand workers skip it when asked to).
SpawnSpec worker_spawn_spec(const JailConfig& config, const WorkerFds& fds, const std::string& worker_source,
                            const std::vector<std::string>& preimport);

}  // namespace qed::sandbox
