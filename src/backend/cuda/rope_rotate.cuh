#pragma once
// The RoPE rotation of one dim pair, shared by rope_bf16 and the fused rope_write_kv so both round alike (the same
// fp32 expression compiles to the same contraction in both kernels). Device-only.
#include <cuda_bf16.h>

namespace qed::cuda {

// Same fp32 steps as cpu::rope: angle = inv_freq * position, precise sincosf (no fast-math intrinsics: angles
// reach 1e5 rad and __cosf loses all accuracy there).
__device__ __forceinline__ void rope_angle(float inv_freq, float position, float* sin_out, float* cos_out) {
  sincosf(inv_freq * position, sin_out, cos_out);
}

// HF rotate_half: (a, b) = dims (i, i + head_dim / 2) → (a c - b s, b c + a s), each rounded to bf16.
__device__ __forceinline__ void rope_rotate(float a, float b, float c, float s, __nv_bfloat16& lo, __nv_bfloat16& hi) {
  lo = __float2bfloat16(a * c + (-b) * s);
  hi = __float2bfloat16(b * c + a * s);
}

}  // namespace qed::cuda
