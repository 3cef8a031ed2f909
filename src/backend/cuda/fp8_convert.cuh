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

}  // namespace qed::cuda
