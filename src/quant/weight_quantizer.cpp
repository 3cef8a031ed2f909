#include "quant/weight_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backend/cpu/quant_ops.h"
#include "core/dtype.h"
#include "core/error.h"

namespace qed::quant {
namespace {

// Elements per chunk: 4 MB of fp32 staging, large enough that the sink's writes are efficient.
constexpr size_t kChunkElements = size_t(1) << 20;

void load_f32(const TensorInfo& t, size_t begin, size_t n, float* out) {
  switch (t.dtype) {
    case DType::BF16: {
      const auto* bits = reinterpret_cast<const uint16_t*>(t.data) + begin;
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(bits[i]);
      return;
    }
    case DType::F32: {
      const auto* values = reinterpret_cast<const float*>(t.data) + begin;
      std::copy(values, values + n, out);
      return;
    }
    default:
      for (size_t i = 0; i < n; ++i) out[i] = t.at(begin + i);
  }
}

struct Matrix {
  size_t rows, cols;
};

Matrix matrix_of(const TensorInfo& w) {
  if (w.shape.size() != 2) fail("{}: a linear weight must be 2-D, has {} dimensions", w.name, w.shape.size());
  return {size_t(w.shape[0]), size_t(w.shape[1])};
}

float checked_amax(const float* x, size_t n, const TensorInfo& w) {
  const float a = cpu::amax(x, n);
  if (!std::isfinite(a)) fail("{}: weight has a non-finite value ({}); refusing to quantize", w.name, a);
  return a;
}

// Calls fn(first_row, row_count, staged fp32 rows) over chunks of whole rows.
template <typename Fn>
void for_row_chunks(const TensorInfo& w, Matrix m, std::vector<float>& staging, Fn&& fn) {
  const size_t rows_per_chunk = std::max<size_t>(1, kChunkElements / std::max<size_t>(1, m.cols));
  staging.resize(rows_per_chunk * m.cols);
  for (size_t r = 0; r < m.rows; r += rows_per_chunk) {
    const size_t n = std::min(rows_per_chunk, m.rows - r);
    load_f32(w, r * m.cols, n * m.cols, staging.data());
    fn(r, n, staging.data());
  }
}

}  // namespace

std::vector<float> quantize_fp8_streamed(const TensorInfo& weight, bool per_channel, const CodeSink& sink) {
  const Matrix m = matrix_of(weight);
  std::vector<float> staging;
  std::vector<uint8_t> codes;
  if (per_channel) {
    std::vector<float> scales(m.rows);
    for_row_chunks(weight, m, staging, [&](size_t first, size_t n, const float* x) {
      codes.resize(n * m.cols);
      for (size_t r = 0; r < n; ++r) {
        scales[first + r] = cpu::fp8_scale_for_amax(checked_amax(x + r * m.cols, m.cols, weight));
      }
      cpu::quantize_fp8_per_channel(x, int(n), int(m.cols), scales.data() + first, codes.data());
      sink(first * m.cols, codes.data(), codes.size());
    });
    return scales;
  }
  // Per tensor: one pass for the amax, one to quantize (the source stays in the page cache between them).
  float amax = 0.0f;
  for_row_chunks(weight, m, staging,
                 [&](size_t, size_t n, const float* x) { amax = std::max(amax, checked_amax(x, n * m.cols, weight)); });
  const float scale = cpu::fp8_scale_for_amax(amax);
  for_row_chunks(weight, m, staging, [&](size_t first, size_t n, const float* x) {
    codes.resize(n * m.cols);
    cpu::quantize_fp8_per_tensor(x, codes.size(), scale, codes.data());
    sink(first * m.cols, codes.data(), codes.size());
  });
  return {scale};
}

std::vector<float> quantize_int8_streamed(const TensorInfo& weight, const CodeSink& sink) {
  const Matrix m = matrix_of(weight);
  std::vector<float> staging;
  std::vector<int8_t> codes;
  std::vector<float> scales(m.rows);
  for_row_chunks(weight, m, staging, [&](size_t first, size_t n, const float* x) {
    for (size_t r = 0; r < n; ++r) checked_amax(x + r * m.cols, m.cols, weight);
    codes.resize(n * m.cols);
    cpu::quantize_int8_per_channel(x, int(n), int(m.cols), scales.data() + first, codes.data());
    sink(first * m.cols, codes.data(), codes.size());
  });
  return scales;
}

}  // namespace qed::quant
