#include "backend/cuda/activation_amax.h"

#include <bit>
#include <cstring>

#include "backend/cuda/amax_kernels.h"
#include "backend/cuda/cuda_check.h"
#include "core/error.h"

namespace qed::cuda {

ActivationAmax::ActivationAmax(int num_layers) : num_layers_(num_layers) {
  if (num_layers <= 0) fail("activation amax: num_layers must be positive, got {}", num_layers);
  const size_t bytes = size_t(num_layers) * kAmaxSites * sizeof(uint32_t);
  slots_ = DeviceBuffer(bytes);
  QED_CUDA_CHECK(cudaMemset(slots_.data(), 0, bytes));
}

void ActivationAmax::record(int layer, AmaxSite site, const uint16_t* x, int rows, int cols, int row_stride,
                            cudaStream_t stream) {
  if (layer < 0 || layer >= num_layers_) fail("activation amax: layer {} of {}", layer, num_layers_);
  uint32_t* slot = slots_.as<uint32_t>() + size_t(layer) * kAmaxSites + size_t(site);
  accumulate_amax_bf16(x, rows, cols, row_stride, slot, stream);
}

std::vector<std::array<float, kAmaxSites>> ActivationAmax::read() const {
  // The backend's stream does not synchronize with the legacy default stream: wait for all work first.
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint32_t> bits(size_t(num_layers_) * kAmaxSites);
  slots_.download(bits.data(), bits.size() * sizeof(uint32_t));
  std::vector<std::array<float, kAmaxSites>> out(static_cast<size_t>(num_layers_));
  for (size_t l = 0; l < out.size(); ++l) {
    for (size_t s = 0; s < kAmaxSites; ++s) out[l][s] = std::bit_cast<float>(bits[l * kAmaxSites + s]);
  }
  return out;
}

}  // namespace qed::cuda
