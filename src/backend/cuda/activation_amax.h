#pragma once
// The CUDA backend's calibration observer: per layer, the amax of the inputs of the q/k/v, o, gate/up and down
// GEMMs and of K (after RoPE) and V as written to the KV cache, the quantities the CPU backend's ForwardObserver
// reports to qed quantize. Recorded on the device into layers × 6 slots, read back once (read()).
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <vector>

#include "backend/cuda/device.h"

namespace qed::cuda {

enum class AmaxSite { QkvInput, OInput, GateUpInput, DownInput, K, V };
inline constexpr int kAmaxSites = 6;

class ActivationAmax {
 public:
  explicit ActivationAmax(int num_layers);  // every slot 0

  int num_layers() const { return num_layers_; }
  // Folds max |x| of a rows × cols bf16 matrix (rows row_stride elements apart) into (layer, site), on `stream`.
  void record(int layer, AmaxSite site, const uint16_t* x, int rows, int cols, int row_stride, cudaStream_t stream);
  // The amax so far, [layer][site] (indexed by AmaxSite). Waits for the device: call it after the forwards.
  std::vector<std::array<float, kAmaxSites>> read() const;

 private:
  int num_layers_ = 0;
  DeviceBuffer slots_;  // uint32 fp32 bit patterns, see accumulate_amax_bf16
};

}  // namespace qed::cuda
