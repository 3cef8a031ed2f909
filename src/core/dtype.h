#pragma once
// Element types of checkpoints and tensors, and exact scalar conversions to/from float.
// Conversions follow IEEE/PyTorch semantics (round-to-nearest-even) so CPU results match HF bit for bit.
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace qed {

enum class DType : uint8_t { F32, F16, BF16, F8_E4M3, I8, I32, I64, U8 };

size_t dtype_size(DType dtype);
// Safetensors spelling ("BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType dtype);
std::optional<DType> dtype_from_name(std::string_view name);

inline float bf16_to_float(uint16_t bits) {
  return std::bit_cast<float>(uint32_t(bits) << 16);
}

inline uint16_t float_to_bf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return uint16_t((bits >> 16) | 0x40);  // keep it a quiet NaN
  uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return uint16_t((bits + rounding) >> 16);
}

float f16_to_float(uint16_t bits);
uint16_t float_to_f16(float value);

// FP8 E4M3 "fn" variant (no infinities, 0x7F/0xFF are NaN, max 448), as in torch.float8_e4m3fn.
float f8e4m3_to_float(uint8_t bits);
uint8_t float_to_f8e4m3(float value);  // saturates to ±448

// Reads element `index` of a raw buffer of `dtype` as float (F32/F16/BF16/F8_E4M3/I8/U8/I32).
float load_as_float(const void* data, DType dtype, size_t index);

}  // namespace qed
