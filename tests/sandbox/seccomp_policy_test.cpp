#include "sandbox/seccomp_policy.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace qed::sandbox {
namespace {

TEST(SeccompPolicy, CompilesToAWholeNumberOfBpfInstructions) {
  auto program = build_seccomp_bpf();
  ASSERT_FALSE(program.empty());
  EXPECT_EQ(program.size() % 8, 0u);  // struct sock_filter is 8 bytes
}

TEST(SeccompPolicy, DeniesTheSyscallsTheIssueNames) {
  const auto& denied = denied_syscalls();
  for (const char* name : {"ptrace", "mount", "umount2", "keyctl", "bpf", "perf_event_open", "unshare", "setns",
                           "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
                           "swapon", "personality", "userfaultfd", "io_uring_setup"}) {
    EXPECT_NE(std::find(denied.begin(), denied.end(), name), denied.end()) << name;
  }
}

}  // namespace
}  // namespace qed::sandbox
