// Backend choice for qed quantize's calibration: the CUDA backend when this build has it and a GPU is visible.
#include <algorithm>

#include "core/error.h"
#include "model/safetensors.h"
#include "quant/calibration.h"
#include "quant/quantized_checkpoint.h"
#ifdef QED_WITH_CUDA_BACKEND
#include "backend/cuda/device.h"
#include "quant/calibration_cuda.h"
#endif

namespace qed::quant {

std::string default_calibration_backend() {
#ifdef QED_WITH_CUDA_BACKEND
  if (!cuda::list_devices().empty()) return "cuda";
#endif
  return "cpu";
}

CalibrationStats calibrate_model(const std::string& model_dir, const std::vector<std::vector<int32_t>>& samples,
                                 const CalibrationBackend& backend, const CalibrationProgress& progress) {
  const std::string kind = backend.kind.empty() ? default_calibration_backend() : backend.kind;
  if (kind != "cpu" && kind != "cuda") fail("--backend must be cpu or cuda, got '{}'", kind);
  const ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  require_unquantized_source(model_dir);  // its linear inputs would be quantized already
  size_t longest = 0;
  for (const auto& s : samples) longest = std::max(longest, s.size());
  constexpr int kBlockSize = 16;
  const int blocks = int((longest + size_t(kBlockSize) - 1) / size_t(kBlockSize));
  if (kind == "cpu") {
    CpuBackendOptions options;
    options.num_threads = backend.threads;
    options.block_size = kBlockSize;
    options.num_blocks = blocks;
    CpuBackend cpu(config, Checkpoint::open(model_dir), options);
    return calibrate(cpu, samples, progress);
  }
#ifdef QED_WITH_CUDA_BACKEND
  CudaBackendOptions options;
  options.device = backend.device;
  options.block_size = kBlockSize;
  options.num_blocks = blocks;
  options.max_batched_tokens = std::max(int(longest), 16);
  options.cuda_graphs = false;  // the recorder would count a graph's padding rows
  auto cuda_backend = CudaBackend::load(model_dir, options);
  return calibrate(*cuda_backend, samples, progress);
#else
  fail("--backend cuda: this qed was built without the CUDA backend (nvcc was not found at configure time)");
#endif
}

}  // namespace qed::quant
