// The decode GEMV's Bf16Gemv instantiations (decode_gemv.cuh): one file per format so they compile in parallel.
#include "backend/cuda/decode_gemv.cuh"

namespace qed::cuda::gemv_detail {

void launch_bf16(const DecodeGemv& g, cudaStream_t stream) {
  launch_format<Bf16Gemv>(g, stream);
}

}  // namespace qed::cuda::gemv_detail
