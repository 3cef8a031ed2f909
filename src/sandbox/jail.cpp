#include "sandbox/jail.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace qed::sandbox {

namespace fs = std::filesystem;

namespace {

std::string find_on_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

constexpr size_t kMiB = 1024 * 1024;

}  // namespace

JailConfig resolve_jail_config(JailConfig config) {
  if (access(config.python.c_str(), X_OK) != 0) {
    fail("sandbox: python interpreter {} not found or not executable (install python3)", config.python);
  }
  if (!config.insecure_no_jail) {
    std::string bwrap = find_on_path(config.bwrap.empty() ? "bwrap" : config.bwrap);
    if (bwrap.empty() || access(bwrap.c_str(), X_OK) != 0) {
      fail(
          "sandbox: bubblewrap (bwrap) not found; install the 'bubblewrap' package (setup.sh does), or use "
          "--insecure-no-jail for development only");
    }
    config.bwrap = bwrap;
  }
  return config;
}

SpawnSpec worker_spawn_spec(const JailConfig& config, const WorkerFds& fds, const std::string& worker_source,
                            const std::vector<std::string>& preimport) {
  const JailLimits& lim = config.limits;
  // Limits the worker applies to itself once inside its namespaces. RLIMIT_NPROC must be set there: outside, it
  // counts every process of the (shared) host uid; inside a fresh user namespace it counts this session only.
  nlohmann::json inner_limits = {
      {"RLIMIT_AS", lim.memory_mb * kMiB},
      {"RLIMIT_CPU", lim.cpu_seconds},
      {"RLIMIT_FSIZE", lim.max_file_mb * kMiB},
      {"RLIMIT_NOFILE", lim.max_open_files},
      {"RLIMIT_CORE", 0},
  };
  if (!config.insecure_no_jail) inner_limits["RLIMIT_NPROC"] = lim.max_processes;
  nlohmann::json worker_config = {{"rlimits", inner_limits}, {"preimport", preimport}};

  SpawnSpec spec;
  // Threads of numeric libraries count against RLIMIT_NPROC and compete for 2 cores: one each.
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "HOME=/home/sandbox",     "USER=sandbox",
                                  "LANG=C.UTF-8",       "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1",
                                  "MKL_NUM_THREADS=1",  "MPLBACKEND=Agg"};
  std::vector<std::string> python_argv = {config.python, "-I", "-B", "-c", worker_source, worker_config.dump()};

  spec.fds = {{0, fds.stdin_fd}, {1, fds.stdout_fd}, {2, fds.stderr_fd}, {3, fds.requests_fd}, {4, fds.replies_fd}};
  // Applied before exec as well, so bwrap and the interpreter start under them (NPROC: see above).
  spec.rlimits = {{RLIMIT_AS, static_cast<rlim_t>(lim.memory_mb * kMiB)},
                  {RLIMIT_CPU, static_cast<rlim_t>(lim.cpu_seconds)},
                  {RLIMIT_FSIZE, static_cast<rlim_t>(lim.max_file_mb * kMiB)},
                  {RLIMIT_NOFILE, static_cast<rlim_t>(lim.max_open_files)},
                  {RLIMIT_CORE, 0}};

  if (config.insecure_no_jail) {
    spec.path = config.python;
    spec.argv = python_argv;
    spec.env = env;
    return spec;
  }

  spec.path = config.bwrap;
  spec.env = {};  // bwrap itself sees nothing of the service's environment either
  spec.fds.emplace_back(5, fds.seccomp_fd);
  if (geteuid() == 0) spec.drop_to = std::make_pair(config.jail_uid, config.jail_gid);
  const std::string tmpfs_bytes = std::to_string(lim.tmpfs_mb * kMiB);
  const std::string shm_bytes = std::to_string(std::min<size_t>(lim.tmpfs_mb, 16) * kMiB);
  std::vector<std::string> a = {
      "bwrap",
      // New user, pid, network (empty: loopback only, down), ipc, uts, cgroup and mount namespaces.
      "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
      "--disable-userns", "--uid", "65534", "--gid", "65534", "--hostname", "sandbox", "--die-with-parent",
      "--new-session", "--cap-drop", "ALL",
      // The Python runtime, read-only; nothing else of the host.
      "--ro-bind", "/usr", "/usr"};
  for (const char* link : {"/bin", "/lib", "/lib64", "/lib32", "/libx32", "/sbin"}) {
    std::error_code ec;
    if (fs::is_symlink(link, ec)) {
      a.insert(a.end(), {"--symlink", fs::read_symlink(link, ec).string(), link});
    }
  }
  // /etc/alternatives: Debian resolves libblas.so.3 (numpy) through it. Symlinks only, no host data.
  for (const char* file : {"/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"}) {
    a.insert(a.end(), {"--ro-bind-try", file, file});
  }
  a.insert(a.end(), {"--proc", "/proc", "--dev", "/dev"});
  // bwrap's /dev is a tmpfs owned by the sandbox uid, without a size limit: left writable, /dev and /dev/shm
  // would let code fill host RAM. A small bounded /dev/shm, then /dev read-only.
  a.insert(a.end(), {"--perms", "1777", "--size", shm_bytes, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"});
  // One bounded tmpfs for everything writable; the home directory is a link into it.
  a.insert(a.end(), {"--perms", "1777", "--size", tmpfs_bytes, "--tmpfs", "/tmp"});
  a.insert(a.end(), {"--symlink", "/tmp", "/home/sandbox", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv"});
  for (const auto& kv : env) {
    auto eq = kv.find('=');
    a.insert(a.end(), {"--setenv", kv.substr(0, eq), kv.substr(eq + 1)});
  }
  a.insert(a.end(), {"--seccomp", "5", "--"});
  a.insert(a.end(), python_argv.begin(), python_argv.end());
  spec.argv = std::move(a);
  return spec;
}

}  // namespace qed::sandbox
