// The decode GEMV's Int8Gemv instantiations (decode_gemv.cuh): one file per format so they compile in parallel.
#include "backend/cuda/decode_gemv.cuh"

namespace qed::cuda::gemv_detail {

void launch_int8(const DecodeGemv& g, cudaStream_t stream) {
  launch_format<Int8Gemv>(g, stream);
}

}  // namespace qed::cuda::gemv_detail
