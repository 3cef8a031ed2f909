// The decode GEMV's Fp8CvtGemv instantiations (decode_gemv.cuh): one file per format so they compile in parallel.
#include "backend/cuda/decode_gemv.cuh"

namespace qed::cuda::gemv_detail {

void launch_fp8_cvt(const DecodeGemv& g, cudaStream_t stream) {
  launch_format<Fp8CvtGemv>(g, stream);
}

}  // namespace qed::cuda::gemv_detail
