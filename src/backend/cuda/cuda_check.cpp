#include "backend/cuda/cuda_check.h"

#include "core/error.h"

namespace qed::cuda {

void throw_cuda_error(cudaError_t status, const char* file, int line) {
  fail("CUDA error {} at {}:{}: {}", cudaGetErrorName(status), file, line, cudaGetErrorString(status));
}

}  // namespace qed::cuda
