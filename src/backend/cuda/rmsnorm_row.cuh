#pragma once
// The arithmetic of one-vector-per-thread RMSNorm (norm_kernels.cu's rmsnorm_row_kernel), shared with the decode
// GEMV's last-CTA norm (decode_gemv_tile.cuh) so the two give the same bits: per 8-element vector the sum of squares
// in element order, per 32 vectors the warp butterfly, the row total over the warp sums in warp order, then
// bf16(bf16(v * inv_rms) * w) and its E4M3 code. Also compiled by the CPU emulation tests (plain float code, the
// intrinsics they define).
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/fp8_convert.cuh"

namespace qed::cuda {

// The longest row a one-vector-per-thread norm takes: 1024 threads of 8 elements.
inline constexpr int kRmsNormRowMaxThreads = 1024;

__device__ __forceinline__ float rms_sum_sq8(const float (&v)[8]) {
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j) sum_sq += v[j] * v[j];
  return sum_sq;
}

// Every lane ends with the same value (each butterfly step adds the same two numbers on both lanes).
__device__ __forceinline__ float rms_warp_sum(float value) {
#pragma unroll
  for (int step = 16; step > 0; step /= 2) value += __shfl_xor_sync(0xffffffffu, value, step);
  return value;
}

__device__ __forceinline__ float rms_inverse(float total, int dim, float eps) {
  return rsqrtf(total / float(dim) + eps);
}

// HF's bf16 steps: the normalized value rounded to bf16 before the weight multiply, the product rounded again.
__device__ __forceinline__ void rms_normalise8(const float (&v)[8], float inv_rms, const float (&w)[8],
                                               float (&out)[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    out[j] = __bfloat162float(__float2bfloat16(__bfloat162float(__float2bfloat16(v[j] * inv_rms)) * w[j]));
  }
}

// The E4M3 codes of eight bf16 outputs, as quantize_fp8_bf16 gives them, packed little-endian.
__device__ __forceinline__ uint2 rms_e4m3_codes8(const float (&out)[8], float scale) {
  uint32_t lo = 0, hi = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    lo |= uint32_t(quantize_e4m3(out[j], scale)) << (8 * j);
    hi |= uint32_t(quantize_e4m3(out[j + 4], scale)) << (8 * j);
  }
  return make_uint2(lo, hi);
}

// Eight bf16 (a 16-byte load) as floats, exactly; and eight bf16-exact floats back.
__device__ __forceinline__ void bf16x8_to_float(const uint4& v, float (&out)[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(words[i] << 16);
    out[2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);
  }
}
__device__ __forceinline__ uint4 bf16_exact_to_x8(const float (&in)[8]) {
  uint32_t words[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    words[i] = (__float_as_uint(in[2 * i]) >> 16) | (__float_as_uint(in[2 * i + 1]) & 0xFFFF0000u);
  }
  return make_uint4(words[0], words[1], words[2], words[3]);
}

}  // namespace qed::cuda
