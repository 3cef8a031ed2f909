#include "backend/cuda/pdl.cuh"
#include "pdl_test_kernels.h"

namespace qed::testing {
namespace {

__global__ void slow_copy_kernel(const unsigned* in, unsigned* out, size_t words, long long spin_cycles) {
  cuda::pdl_wait();
  cuda::pdl_trigger();
  const long long start = clock64();
  while (clock64() - start < spin_cycles) {
  }
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < words; i += size_t(gridDim.x) * blockDim.x) {
    out[i] = in[i];
  }
}

}  // namespace

void slow_copy(const void* in, void* out, size_t bytes, long long spin_cycles, cudaStream_t stream) {
  cuda::launch_kernel(slow_copy_kernel, dim3(4), dim3(256), 0, stream, true, static_cast<const unsigned*>(in),
                      static_cast<unsigned*>(out), bytes / 4, spin_cycles);
}

}  // namespace qed::testing
