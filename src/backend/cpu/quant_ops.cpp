#include "backend/cpu/quant_ops.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "core/dtype.h"

namespace qed::cpu {
namespace {

// float → E4M3fn by rounding the fp32 significand to 3 bits (round to nearest even), the same result as
// core/dtype.h's exhaustive search (tests/quant compares the two on millions of inputs), fast enough to quantize
// every activation of a forward. Saturates at 448 as the quantizers of vLLM/ModelOpt clamp before casting.
uint8_t float_to_e4m3_rne(float value) {
  if (std::isnan(value)) return 0x7F;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  const float a = std::fabs(value);
  if (a >= kFp8E4M3Max) return sign | 0x7E;
  if (a < 0x1p-6f) {
    // Subnormals are multiples of 2^-9; the code is the multiple itself, and 8 · 2^-9 = 2^-6 is code 0x08, the
    // smallest normal, so a value rounding up across the boundary lands on the right code too.
    return sign | uint8_t(std::nearbyint(a * 512.0f));
  }
  uint32_t bits = std::bit_cast<uint32_t>(a);
  bits += 0x7FFFF + ((bits >> 20) & 1);  // round the 20 dropped significand bits, ties to even
  const uint32_t exponent = (bits >> 23) - 127 + 7;
  const uint32_t code = exponent << 3 | ((bits >> 20) & 0x7);
  return sign | uint8_t(std::min<uint32_t>(code, 0x7E));
}

float e4m3_value(uint8_t code) {
  // 256-entry table built once: decoding is on the hot path of every dequantized activation.
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[size_t(i)] = f8e4m3_to_float(uint8_t(i));
    return t;
  }();
  return table[code];
}

}  // namespace

float amax(const float* x, size_t n) {
  float result = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return std::numeric_limits<float>::quiet_NaN();
    result = std::max(result, std::fabs(x[i]));
  }
  return result;
}

float fp8_scale_for_amax(float amax_value) {
  return amax_value > 0.0f ? amax_value / kFp8E4M3Max : 1.0f;
}

float int8_scale_for_amax(float amax_value) {
  return amax_value > 0.0f ? amax_value / kInt8Max : 1.0f;
}

uint8_t quantize_fp8(float value, float scale) {
  return float_to_e4m3_rne(value / scale);
}

void quantize_fp8_per_tensor(const float* x, size_t n, float scale, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) out[i] = quantize_fp8(x[i], scale);
}

void quantize_fp8_per_channel(const float* w, int rows, int cols, const float* scales, uint8_t* out) {
  for (int r = 0; r < rows; ++r) {
    quantize_fp8_per_tensor(w + size_t(r) * cols, size_t(cols), scales[r], out + size_t(r) * cols);
  }
}

void dequantize_fp8_per_tensor(const uint8_t* q, size_t n, float scale, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = e4m3_value(q[i]) * scale;
}

void dequantize_fp8_per_channel(const uint8_t* q, int rows, int cols, const float* scales, float* out) {
  for (int r = 0; r < rows; ++r) {
    dequantize_fp8_per_tensor(q + size_t(r) * cols, size_t(cols), scales[r], out + size_t(r) * cols);
  }
}

void fake_quantize_fp8(const float* x, size_t n, float scale, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = e4m3_value(quantize_fp8(x[i], scale)) * scale;
}

bool fake_quantize_fp8_per_group(const float* x, size_t n, size_t group, float* out) {
  bool finite = true;
  for (size_t begin = 0; begin < n; begin += group) {
    const float a = amax(x + begin, group);
    finite = finite && !std::isnan(a);
    const float s = std::max(a, kFp8GroupEps) / kFp8E4M3Max;
    fake_quantize_fp8(x + begin, group, s, out + begin);
  }
  return finite;
}

int8_t quantize_int8(float value, float scale) {
  const float q = value / scale;
  if (std::isnan(q)) return 0;
  // nearbyint rounds half to even in the default rounding mode, as torch.round does.
  return int8_t(std::clamp(std::nearbyint(q), -kInt8Max, kInt8Max));
}

void quantize_int8_per_channel(const float* w, int rows, int cols, float* scales, int8_t* out) {
  for (int r = 0; r < rows; ++r) {
    const float* row = w + size_t(r) * cols;
    scales[r] = int8_scale_for_amax(amax(row, size_t(cols)));
    for (int c = 0; c < cols; ++c) out[size_t(r) * cols + c] = quantize_int8(row[c], scales[r]);
  }
}

void dequantize_int8_per_channel(const int8_t* q, int rows, int cols, const float* scales, float* out) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) out[size_t(r) * cols + c] = float(q[size_t(r) * cols + c]) * scales[r];
  }
}

void fp8_gemm(const uint8_t* x_q, float x_scale, const uint8_t* w_q, const float* w_scales, bool per_channel,
              const float* bias, float* out, int rows, int in, int out_dim) {
  std::vector<float> x(size_t(rows) * size_t(in)), w(static_cast<size_t>(in));
  for (size_t i = 0; i < x.size(); ++i) x[i] = e4m3_value(x_q[i]);
  for (int j = 0; j < out_dim; ++j) {
    for (int k = 0; k < in; ++k) w[size_t(k)] = e4m3_value(w_q[size_t(j) * in + k]);
    const float scale = x_scale * (per_channel ? w_scales[j] : w_scales[0]);
    for (int r = 0; r < rows; ++r) {
      const float value = dot(x.data() + size_t(r) * in, w.data(), in) * scale;
      out[size_t(r) * out_dim + j] = bias ? value + bias[j] : value;
    }
  }
}

void int8_wo_gemm(const float* x, const int8_t* w_q, const float* w_scales, const float* bias, float* out, int rows,
                  int in, int out_dim) {
  std::vector<float> w(static_cast<size_t>(in));
  for (int j = 0; j < out_dim; ++j) {
    for (int k = 0; k < in; ++k) w[size_t(k)] = float(w_q[size_t(j) * in + k]);
    for (int r = 0; r < rows; ++r) {
      const float value = dot(x + size_t(r) * in, w.data(), in) * w_scales[j];
      out[size_t(r) * out_dim + j] = bias ? value + bias[j] : value;
    }
  }
}

}  // namespace qed::cpu
