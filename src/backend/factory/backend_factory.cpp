#include "backend/factory/backend_factory.h"

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/random_weights.h"
#include "backend/tp/tp_cpu_backend.h"
#include "core/error.h"
#ifdef QED_WITH_CUDA_BACKEND
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#endif
#ifdef QED_WITH_TP_CUDA
#include "backend/tp_cuda/tp_cuda_backend.h"
#endif

namespace qed {

#ifdef QED_WITH_CUDA_BACKEND
namespace {
CudaBackendOptions cuda_options(const BackendSelection& selection) {
  CudaBackendOptions options;
  options.device = selection.device;
  options.block_size = selection.block_size;
  options.num_blocks = selection.num_blocks;
  options.gpu_memory_fraction = selection.gpu_memory_fraction;
  options.max_batched_tokens = selection.max_batched_tokens;
  options.cuda_graphs = selection.cuda_graphs;
  options.prefill_attention_min_rows = selection.prefill_attention_min_rows;
  options.kv_cache_dtype = parse_kv_cache_dtype(selection.kv_cache_dtype);
  if (selection.pipelined_decode_attention) options.decode_kernel = cuda::DecodeKernel::TensorCoresPipelined;
  return options;
}
}  // namespace
#endif

namespace {
CpuBackendOptions cpu_options(const BackendSelection& selection) {
  if (selection.kv_cache_dtype != "auto") {
    fail(
        "--kv-cache-dtype {}: the cpu backend follows the checkpoint (an FP8 cache where it has k/v scales); the "
        "flag is for --backend cuda",
        selection.kv_cache_dtype);
  }
  CpuBackendOptions options;
  options.num_threads = selection.threads;
  options.block_size = selection.block_size;
  options.num_blocks = selection.num_blocks;
  options.kv_cache_bytes = selection.kv_cache_bytes;
  return options;
}

#ifdef QED_WITH_TP_CUDA
tp::TpCudaOptions tp_cuda_options(const BackendSelection& selection) {
  tp::TpCudaOptions options;
  options.ranks = selection.tensor_parallel_size;
  options.first_device = selection.device;
  options.rank = cuda_options(selection);
  return options;
}
#else
[[noreturn]] void no_tp_cuda() {
  fail(
      "--tensor-parallel-size > 1 with --backend cuda: this qed was built without the tensor-parallel CUDA runner "
      "(it needs the CUDA backend and nccl.h at configure time)");
}
#endif
}  // namespace

bool cuda_backend_compiled() {
#ifdef QED_WITH_CUDA_BACKEND
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& model_dir, const BackendSelection& selection) {
  if (selection.tensor_parallel_size < 1) {
    fail("--tensor-parallel-size must be at least 1, got {}", selection.tensor_parallel_size);
  }
  const bool sharded = selection.tensor_parallel_size > 1;
  if (selection.kind == "cpu") {
    const CpuBackendOptions options = cpu_options(selection);
    if (sharded) return tp::TpSimulatedCpuBackend::load(model_dir, selection.tensor_parallel_size, options);
    return CpuBackend::load(model_dir, options);
  }
  if (selection.kind == "cuda" && sharded) {
#ifdef QED_WITH_TP_CUDA
    return tp::TpCudaBackend::load(model_dir, tp_cuda_options(selection));
#else
    no_tp_cuda();
#endif
  }
  if (selection.kind == "cuda") {
#ifdef QED_WITH_CUDA_BACKEND
    return CudaBackend::load(model_dir, cuda_options(selection));
#else
    fail("--backend cuda: this qed was built without the CUDA backend (configure where nvcc is found, QED_CUDA=ON)");
#endif
  }
  fail("--backend must be cpu or cuda, got '{}'", selection.kind);
}

std::unique_ptr<Backend> make_random_backend(const ModelConfig& config, uint64_t seed,
                                             const BackendSelection& selection) {
  if (selection.kind == "cpu") {
    // Small shapes only (the server's and benchmarks' plumbing): make_random_cpu_backend refuses what would not fit.
    if (selection.tensor_parallel_size != 1) fail("random weights (--config) on --backend cpu: no tensor parallelism");
    if (selection.random_dtype != "bf16") {
      fail("random {} weights (--config --dtype) need --backend cuda; on cpu they are fp32 (--dtype bf16)",
           selection.random_dtype);
    }
    return make_random_cpu_backend(config, seed, cpu_options(selection));
  }
  if (selection.kind != "cuda") fail("--backend must be cpu or cuda, got '{}'", selection.kind);
  if (selection.tensor_parallel_size < 1) {
    fail("--tensor-parallel-size must be at least 1, got {}", selection.tensor_parallel_size);
  }
  if (selection.tensor_parallel_size > 1) {
#ifdef QED_WITH_TP_CUDA
    return tp::TpCudaBackend::random(config, seed, tp_cuda_options(selection),
                                     cuda::parse_random_weights_dtype(selection.random_dtype));
#else
    no_tp_cuda();
#endif
  }
#ifdef QED_WITH_CUDA_BACKEND
  return CudaBackend::random(config, seed, cuda_options(selection),
                             cuda::parse_random_weights_dtype(selection.random_dtype));
#else
  (void)config;
  (void)seed;
  fail("--backend cuda: this qed was built without the CUDA backend (configure where nvcc is found, QED_CUDA=ON)");
#endif
}

BackendDevice describe_backend_device(const BackendSelection& selection) {
  BackendDevice out;
  out.device = "cpu";
#ifdef QED_WITH_CUDA_BACKEND
  if (selection.kind == "cuda") {
    for (const cuda::DeviceInfo& info : cuda::list_devices()) {
      if (info.index == selection.device) out.device = info.name;
    }
    out.driver = cuda::driver_cuda_version();
    out.cuda = cuda::runtime_cuda_version();
  }
#else
  (void)selection;
#endif
  return out;
}

}  // namespace qed
