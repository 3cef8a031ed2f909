#pragma once
// Every CUDA runtime call is checked: an exit code of 0 proves nothing on a GPU.
// The failure path lives in a .cpp because nvcc cannot evaluate fmt's consteval format strings.
#include <cuda_runtime.h>

namespace qed::cuda {
[[noreturn]] void throw_cuda_error(cudaError_t status, const char* file, int line);
// A kernel wrapper's argument check failed (a shape the kernels do not support): throws qed::Error(message).
[[noreturn]] void throw_kernel_argument_error(const char* message);
}  // namespace qed::cuda

// Host-side argument checks in .cu wrappers, which cannot use fmt (see above): the message names the condition.
#define QED_KERNEL_REQUIRE(cond, message)                           \
  do {                                                              \
    if (!(cond)) ::qed::cuda::throw_kernel_argument_error(message); \
  } while (0)

#define QED_CUDA_CHECK(expr)                                                                                  \
  do {                                                                                                        \
    cudaError_t qed_cuda_status_ = (expr);                                                                    \
    if (qed_cuda_status_ != cudaSuccess) ::qed::cuda::throw_cuda_error(qed_cuda_status_, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, execution errors at the next sync.
#define QED_CUDA_CHECK_LAUNCH() QED_CUDA_CHECK(cudaGetLastError())
