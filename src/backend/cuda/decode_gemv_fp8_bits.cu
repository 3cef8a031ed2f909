// The decode GEMV's Fp8BitsGemv instantiations (decode_gemv.cuh): one file per format so they compile in parallel.
#include "backend/cuda/decode_gemv.cuh"

namespace qed::cuda::gemv_detail {

void launch_fp8_bits(const DecodeGemv& g, cudaStream_t stream) {
  launch_format<Fp8BitsGemv>(g, stream);
}

}  // namespace qed::cuda::gemv_detail
