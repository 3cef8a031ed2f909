#include "core/dtype.h"

#include <cstring>

namespace qed {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return 4;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
    case DType::F8_E4M3:
      return 1;
    case DType::I8:
      return 1;
    case DType::U8:
      return 1;
    case DType::I32:
      return 4;
    case DType::I64:
      return 8;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::F8_E4M3:
      return "F8_E4M3";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
  }
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I8, DType::U8, DType::I32, DType::I64}) {
    if (dtype_name(d) == name) return d;
  }
  return std::nullopt;
}

float f16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (mantissa & 0x3FF) << 13;
    }
  } else if (exponent == 0x1F) {
    bits = sign | 0x7F800000 | mantissa << 13;
  } else {
    bits = sign | (exponent + 127 - 15) << 23 | mantissa << 13;
  }
  return std::bit_cast<float>(bits);
}

uint16_t float_to_f16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000);
  if (std::isnan(value)) return sign | 0x7E00;
  float a = std::fabs(value);
  if (a >= 65520.0f) return sign | 0x7C00;                    // rounds to inf
  if (a < 6.103515625e-05f) {                                 // subnormal range: scale so rint does the rounding
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));  // 2^24
  }
  uint32_t abits = std::bit_cast<uint32_t>(a);
  uint32_t exponent = (abits >> 23) - 127 + 15;
  uint32_t mantissa = abits & 0x7FFFFF;
  uint32_t half = exponent << 10 | mantissa >> 13;
  uint32_t rest = mantissa & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;
  return sign | uint16_t(half);
}

float f8e4m3_to_float(uint8_t b) {
  uint32_t sign = b & 0x80;
  uint32_t exponent = (b >> 3) & 0xF;
  uint32_t mantissa = b & 0x7;
  if (exponent == 0xF && mantissa == 0x7) return std::nanf("");
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(float(mantissa), -9);  // subnormal: m/8 * 2^-6
  } else {
    magnitude = std::ldexp(1.0f + float(mantissa) / 8.0f, int(exponent) - 7);
  }
  return sign ? -magnitude : magnitude;
}

uint8_t float_to_f8e4m3(float value) {
  if (std::isnan(value)) return 0x7F;
  uint8_t sign = std::signbit(value) ? 0x80 : 0;
  float a = std::fabs(value);
  if (a >= 448.0f) return sign | 0x7E;  // saturate (torch casts overflow to NaN; quantizers clamp first)
  // Round to nearest even among representable values by searching the 127 magnitudes: exact and simple.
  uint8_t best = 0;
  float best_err = a;
  for (uint8_t code = 1; code <= 0x7E; ++code) {
    float candidate = f8e4m3_to_float(code);
    float err = std::fabs(candidate - a);
    if (err < best_err || (err == best_err && (code & 1) == 0 && (best & 1) == 1)) {
      best = code;
      best_err = err;
    }
    if (candidate > a) break;
  }
  return sign | best;
}

float load_as_float(const void* data, DType dtype, size_t index) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  switch (dtype) {
    case DType::F32: {
      float v;
      std::memcpy(&v, bytes + index * 4, 4);
      return v;
    }
    case DType::F16: {
      uint16_t v;
      std::memcpy(&v, bytes + index * 2, 2);
      return f16_to_float(v);
    }
    case DType::BF16: {
      uint16_t v;
      std::memcpy(&v, bytes + index * 2, 2);
      return bf16_to_float(v);
    }
    case DType::F8_E4M3:
      return f8e4m3_to_float(bytes[index]);
    case DType::I8:
      return float(static_cast<int8_t>(bytes[index]));
    case DType::U8:
      return float(bytes[index]);
    case DType::I32: {
      int32_t v;
      std::memcpy(&v, bytes + index * 4, 4);
      return float(v);
    }
    case DType::I64: {
      int64_t v;
      std::memcpy(&v, bytes + index * 8, 8);
      return float(v);
    }
  }
  return 0.0f;
}

}  // namespace qed
