#pragma once
// The syscall policy of jailed interpreters, compiled to a classic-BPF program that bubblewrap installs
// (`--seccomp FD`) right before it execs the interpreter.
#include <cstdint>
#include <string>
#include <vector>

namespace qed::sandbox {

// Default allow; listed syscalls fail with EPERM (ENOSYS for clone3, so glibc falls back to clone, whose flags
// we can inspect). Sockets are limited to AF_UNIX; foreign ABIs (i386/x32 on x86-64) kill the process.
// Throws qed::Error when libseccomp cannot build or export the filter.
std::vector<uint8_t> build_seccomp_bpf();

// Names of the syscalls denied outright (for docs, logs and tests).
const std::vector<std::string>& denied_syscalls();

}  // namespace qed::sandbox
