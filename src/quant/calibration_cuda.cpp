#include "quant/calibration_cuda.h"

namespace qed::quant {

CalibrationStats calibrate(CudaBackend& backend, const std::vector<std::vector<int32_t>>& samples,
                           const CalibrationProgress& progress) {
  CalibrationStats stats;
  cuda::ActivationAmax recorder(backend.config().num_layers);
  backend.set_amax_recorder(&recorder);
  struct Reset {
    CudaBackend& b;
    ~Reset() { b.set_amax_recorder(nullptr); }
  } reset{backend};
  run_calibration_forwards(backend, samples, stats, progress);
  const auto amax = recorder.read();
  stats.layers.resize(amax.size());
  for (size_t l = 0; l < amax.size(); ++l) {
    auto site = [&](cuda::AmaxSite s) { return amax[l][size_t(s)]; };
    stats.layers[l] = {site(cuda::AmaxSite::QkvInput),  site(cuda::AmaxSite::OInput), site(cuda::AmaxSite::GateUpInput),
                       site(cuda::AmaxSite::DownInput), site(cuda::AmaxSite::K),      site(cuda::AmaxSite::V)};
  }
  check_finite_amax(stats);
  return stats;
}

}  // namespace qed::quant
