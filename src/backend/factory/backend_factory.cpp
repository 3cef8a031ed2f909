#include "backend/factory/backend_factory.h"

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#ifdef QED_WITH_CUDA_BACKEND
#include "backend/cuda/cuda_backend.h"
#endif

namespace qed {

bool cuda_backend_compiled() {
#ifdef QED_WITH_CUDA_BACKEND
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& model_dir, const BackendSelection& selection) {
  if (selection.kind == "cpu") {
    CpuBackendOptions options;
    options.num_threads = selection.threads;
    options.block_size = selection.block_size;
    options.num_blocks = selection.num_blocks;
    options.kv_cache_bytes = selection.kv_cache_bytes;
    return CpuBackend::load(model_dir, options);
  }
  if (selection.kind == "cuda") {
#ifdef QED_WITH_CUDA_BACKEND
    CudaBackendOptions options;
    options.device = selection.device;
    options.block_size = selection.block_size;
    options.num_blocks = selection.num_blocks;
    options.gpu_memory_fraction = selection.gpu_memory_fraction;
    options.max_batched_tokens = selection.max_batched_tokens;
    return CudaBackend::load(model_dir, options);
#else
    fail("--backend cuda: this qed was built without the CUDA backend (configure where nvcc is found, QED_CUDA=ON)");
#endif
  }
  fail("--backend must be cpu or cuda, got '{}'", selection.kind);
}

}  // namespace qed
