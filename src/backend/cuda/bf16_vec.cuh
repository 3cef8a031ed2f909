#pragma once
// 16-byte vectors of eight bf16: the load width Hopper's memory system is fastest at (HOPPER.md). Device-only.
#include <cuda_bf16.h>

#include <cstdint>

namespace qed::cuda {

struct alignas(16) Bf16x8 {
  __nv_bfloat162 pair[4];
};

__device__ __forceinline__ void load_f32x8(const __nv_bfloat16* src, float (&out)[8]) {
  const Bf16x8 v = *reinterpret_cast<const Bf16x8*>(src);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(v.pair[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void store_f32x8(__nv_bfloat16* dst, const float (&in)[8]) {
  Bf16x8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) v.pair[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  *reinterpret_cast<Bf16x8*>(dst) = v;
}

inline __nv_bfloat16* as_bf16(uint16_t* p) {
  return reinterpret_cast<__nv_bfloat16*>(p);
}
inline const __nv_bfloat16* as_bf16(const uint16_t* p) {
  return reinterpret_cast<const __nv_bfloat16*>(p);
}

}  // namespace qed::cuda
