#include "backend/cuda/cuda_check.h"

#include "core/error.h"

namespace qed::cuda {

void throw_cuda_error(cudaError_t status, const char* file, int line) {
  fail("CUDA error {} at {}:{}: {}", cudaGetErrorName(status), file, line, cudaGetErrorString(status));
}

void throw_kernel_argument_error(const char* message) {
  fail("CUDA kernel: {}", message);
}

}  // namespace qed::cuda
