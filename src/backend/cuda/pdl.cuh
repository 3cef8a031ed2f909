#pragma once
// Programmatic dependent launch (PDL, sm_90+): a kernel launched with launch_kernel(..., pdl = true) may start while
// the kernel before it on the stream is still running, so its launch latency and its prologue (e.g. a GEMV's first
// weight loads, which depend on nothing earlier kernels write) overlap the previous kernel's tail. In a decode step
// of ~500 short kernels that tail is a large share of the step.
//
// The contract for a kernel launched with pdl = true:
//   - before pdl_wait() it reads only what no earlier kernel of the stream writes (weights, constants) and writes
//     nothing in global memory (an earlier kernel may still be reading it);
//   - pdl_wait() returns once every earlier kernel it depends on has completed and its writes are visible;
//   - pdl_trigger() lets the next PDL kernel of the stream launch; call it once the kernel no longer needs SM
//     resources to be free for its own CTAs (right after pdl_wait() is always safe: the trigger fires only when
//     every CTA of this grid has triggered or exited, so all of them are already resident).
// Kernels launched without PDL (or on sm_80/sm_89, where both are no-ops) keep the usual stream order, and a
// kernel launched with pdl = true after a cuBLASLt kernel simply starts when that one ends.
#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.h"

namespace qed::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// cudaLaunchKernelEx with the PDL attribute when `pdl` and pdl_enabled(); graph capture records it as a
// programmatic edge.
template <typename... KernelArgs, typename... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                   bool pdl, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = pdl && pdl_enabled() ? 1 : 0;
  QED_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<KernelArgs>(std::forward<Args>(args))...));
}

}  // namespace qed::cuda
