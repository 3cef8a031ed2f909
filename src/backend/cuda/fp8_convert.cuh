#pragma once
// float → FP8 E4M3fn on the device, shared by the kernels that write E4M3 activations (quant_kernels.cu, and the
// RMSNorm / SiLU-and-mul kernels that fuse the quantization of their output). Device-only.
#include <cstdint>

namespace qed::cuda {

// The CPU reference's float → E4M3fn (backend/cpu/quant_ops.cpp) step for step, so the codes agree bit for bit on
// every input: round the fp32 significand to 3 bits (ties to even), subnormals as multiples of 2^-9, saturate at
// ±448, NaN → 0x7F.
__device__ __forceinline__ uint8_t float_to_e4m3_rne(float value) {
  if (isnan(value)) return 0x7F;
  const uint8_t sign = uint8_t((__float_as_uint(value) >> 24) & 0x80u);
  const float a = fabsf(value);
  if (a >= 448.0f) return sign | 0x7E;
  if (a < 0x1p-6f) return sign | uint8_t(__float2int_rn(a * 512.0f));
  uint32_t bits = __float_as_uint(a);
  bits += 0x7FFFFu + ((bits >> 20) & 1u);
  const uint32_t exponent = (bits >> 23) - 127u + 7u;
  const uint32_t code = exponent << 3 | ((bits >> 20) & 0x7u);
  return sign | uint8_t(min(code, 0x7Eu));
}

// The code of value / scale with IEEE division (cpu::quantize_fp8).
__device__ __forceinline__ uint8_t quantize_e4m3(float value, float scale) {
  return float_to_e4m3_rne(__fdiv_rn(value, scale));
}

// Four E4M3 codes (byte i of `codes` = element i) → two fp16x2 words (elements 0-1, 2-3) holding code × 2^-8,
// exactly, with bit operations only: E4M3's sign, 4 exponent and 3 mantissa bits placed into fp16's fields (bias 15
// instead of 7: the 2^-8), E4M3 subnormals landing on fp16 subnormals. No hardware FP8 conversion (sm_89+) needed.
// Codes 0x7F/0xFF (NaN) come out as 480 × 2^-8; the KV writers never store them (they saturate at 448).
__device__ __forceinline__ void e4m3x4_to_f16x2_times_2m8(uint32_t codes, uint32_t& lo, uint32_t& hi) {
  const uint32_t a = __byte_perm(codes, 0u, 0x1404u);  // code 0 in bits 8-15, code 1 in bits 24-31
  const uint32_t b = __byte_perm(codes, 0u, 0x3424u);  // codes 2 and 3 likewise
  lo = (a & 0x80008000u) | ((a >> 1) & 0x3F803F80u);
  hi = (b & 0x80008000u) | ((b >> 1) & 0x3F803F80u);
}

}  // namespace qed::cuda
