#pragma once
// Calibration on the CUDA backend (built only with it): the same statistics as calibrate(CpuBackend&), recorded
// on the device by cuda::ActivationAmax from the bf16 activations the GPU computes with. They agree with the CPU's
// fp32 amax to bf16 accuracy (tests/backend_cuda/cuda_calibration_test.cpp states the bound).
#include "backend/cuda/activation_amax.h"
#include "backend/cuda/cuda_backend.h"
#include "quant/calibration.h"

namespace qed::quant {

// One forward per sample, amax folded on the device, read back once at the end; throws on a non-finite amax.
CalibrationStats calibrate(CudaBackend& backend, const std::vector<std::vector<int32_t>>& samples,
                           const CalibrationProgress& progress = {});

}  // namespace qed::quant
