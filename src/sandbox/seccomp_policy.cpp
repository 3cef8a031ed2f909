#include "sandbox/seccomp_policy.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace qed::sandbox {

const std::vector<std::string>& denied_syscalls() {
  // Kernel attack surface an interpreter doing math never needs, plus everything that changes namespaces,
  // mounts, other processes' memory or the machine itself.
  static const std::vector<std::string> names = {
      "ptrace",
      "process_vm_readv",
      "process_vm_writev",
      "kcmp",
      "pidfd_getfd",
      "mount",
      "umount",
      "umount2",
      "pivot_root",
      "chroot",
      "move_mount",
      "open_tree",
      "fsopen",
      "fsconfig",
      "fsmount",
      "fspick",
      "mount_setattr",
      "unshare",
      "setns",
      "keyctl",
      "add_key",
      "request_key",
      "bpf",
      "perf_event_open",
      "userfaultfd",
      "io_uring_setup",
      "io_uring_enter",
      "io_uring_register",
      "kexec_load",
      "kexec_file_load",
      "init_module",
      "finit_module",
      "delete_module",
      "reboot",
      "swapon",
      "swapoff",
      "acct",
      "quotactl",
      "quotactl_fd",
      "syslog",
      "vhangup",
      "iopl",
      "ioperm",
      "personality",
      "open_by_handle_at",
      "name_to_handle_at",
      "lookup_dcookie",
      "nfsservctl",
      "settimeofday",
      "clock_settime",
      "clock_adjtime",
      "adjtimex",
      "sethostname",
      "setdomainname",
      "fanotify_init",
      "uselib",
      "_sysctl",
      "mbind",
      "migrate_pages",
      "move_pages",
      "set_mempolicy",
  };
  return names;
}

namespace {

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(static_cast<scmp_filter_ctx>(ctx)); }
};

void check(int rc, const char* what) {
  if (rc < 0) fail("seccomp: {} failed: {}", what, std::strerror(-rc));
}

// libseccomp's SCMP_A0() macros are C compound literals, which C++ compilers reject (-Wc99-extensions).
scmp_arg_cmp arg_cmp(unsigned arg, scmp_compare op, uint64_t a, uint64_t b = 0) {
  scmp_arg_cmp cmp{};
  cmp.arg = arg;
  cmp.op = op;
  cmp.datum_a = a;
  cmp.datum_b = b;
  return cmp;
}

void add_with_arg(scmp_filter_ctx ctx, uint32_t action, int nr, scmp_arg_cmp cmp, const char* what) {
  check(seccomp_rule_add_array(ctx, action, nr, 1, &cmp), what);
}

}  // namespace

std::vector<uint8_t> build_seccomp_bpf() {
  std::unique_ptr<void, FilterDeleter> owner(seccomp_init(SCMP_ACT_ALLOW));
  if (!owner) fail("seccomp: seccomp_init failed (libseccomp unusable on this kernel?)");
  auto ctx = static_cast<scmp_filter_ctx>(owner.get());
  const auto deny = SCMP_ACT_ERRNO(EPERM);

  for (const auto& name : denied_syscalls()) {
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr == __NR_SCMP_ERROR) continue;  // not a syscall on this architecture
    check(seccomp_rule_add(ctx, deny, nr, 0), name.c_str());
  }
  // clone3 passes its flags in memory we cannot inspect: say "not implemented" so libc uses clone instead.
  int clone3 = seccomp_syscall_resolve_name("clone3");
  if (clone3 != __NR_SCMP_ERROR) check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), clone3, 0), "clone3");
  // clone: threads and fork are fine, new namespaces are not.
  for (uint64_t flag : {uint64_t{CLONE_NEWNS}, uint64_t{CLONE_NEWUTS}, uint64_t{CLONE_NEWIPC}, uint64_t{CLONE_NEWUSER},
                        uint64_t{CLONE_NEWPID}, uint64_t{CLONE_NEWNET}, uint64_t{CLONE_NEWCGROUP}}) {
    add_with_arg(ctx, deny, SCMP_SYS(clone), arg_cmp(0, SCMP_CMP_MASKED_EQ, flag, flag), "clone");
  }
  // Only AF_UNIX sockets (multiprocessing and friends); no IP, netlink, packet or raw sockets even inside the
  // empty network namespace.
  for (int nr : {SCMP_SYS(socket), SCMP_SYS(socketpair)}) {
    add_with_arg(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), nr, arg_cmp(0, SCMP_CMP_NE, AF_UNIX), "socket");
  }
  // Terminal injection: pushing characters into a terminal's input queue.
  for (uint64_t request : {uint64_t{TIOCSTI}, uint64_t{TIOCLINUX}}) {
    add_with_arg(ctx, deny, SCMP_SYS(ioctl), arg_cmp(1, SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, request), "ioctl");
  }

  // Export through a memfd: libseccomp writes to a file descriptor, we want bytes.
  int fd = memfd_create("qed-seccomp-export", MFD_CLOEXEC);
  if (fd < 0) fail("seccomp: memfd_create failed: {}", std::strerror(errno));
  int rc = seccomp_export_bpf(ctx, fd);
  if (rc < 0) {
    close(fd);
    fail("seccomp: seccomp_export_bpf failed: {}", std::strerror(-rc));
  }
  off_t size = lseek(fd, 0, SEEK_END);
  std::vector<uint8_t> program(static_cast<size_t>(size > 0 ? size : 0));
  ssize_t got = pread(fd, program.data(), program.size(), 0);
  close(fd);
  if (size <= 0 || got != size) fail("seccomp: exported filter could not be read back");
  return program;
}

}  // namespace qed::sandbox
