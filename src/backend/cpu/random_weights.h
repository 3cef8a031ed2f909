#pragma once
// A CpuBackend of an HF config's shape with random weights, for exercising the server and benchmarks' plumbing on
// small shapes without a checkpoint (the CUDA backend generates its own on the device: CudaBackend::random).
#include <cstdint>
#include <memory>

#include "backend/cpu/cpu_backend.h"
#include "model/model_config.h"

namespace qed {

// Weights uniform in [-a, a) with HF's init std 0.02 (as the CUDA backend's random weights), norms 1. Throws
// qed::Error with one line for a quantized config (random weights here are unquantized) or a shape whose fp32
// weights would not fit in half of this machine's memory.
std::unique_ptr<CpuBackend> make_random_cpu_backend(const ModelConfig& config, uint64_t seed,
                                                    const CpuBackendOptions& options);

}  // namespace qed
