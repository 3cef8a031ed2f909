#pragma once
// What the decode GEMM tests (skinny_gemm and decode_gemv, on the GPU and emulated on the CPU) share: the operands
// each weight format's kernel reads, quantized as the CPU reference quantizes them, the reference's result
// (cpu::matmul, cpu::fp8_gemm, cpu::int8_wo_gemm) and the magnitude the tolerances scale with; and the argument
// refusals both launchers make.
//
// Tolerances: every product is exact in fp32 (bf16·bf16, E4M3·E4M3, bf16·int8), so kernel and reference differ by
// fp32 summation order, bounded by ~sqrt(K) fp32 ulps of M = max over outputs of Σ_k |x_k w_k| (scales included):
// kFp32SumTolerance · M absolute (plus half a bf16 ulp relative for a bf16 output). The FP8 tensor cores may keep ~14
// bits of a running sum: kFp8MmaTolerance · M for skinny_gemm's FP8 MMAs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_kernels.h"
#include "core/dtype.h"
#include "cuda_test_util.h"

namespace qed::testing {

inline constexpr float kFp32SumTolerance = 1e-5f;
inline constexpr float kFp8MmaTolerance = 4e-4f;

enum class GemmFormat { Bf16, Fp8PerTensor, Fp8PerChannel, Int8 };

inline const char* format_name(GemmFormat format) {
  static const char* const kNames[] = {"bf16", "fp8 per-tensor", "fp8 per-channel", "int8"};
  return kNames[int(format)];
}

// max over (r, j) of Σ_k |x[r][k] · w[j][k]| · row_scale[j]: x rows × in, w out × in.
inline float max_abs_dot(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& row_scale,
                         int rows, int in, int out) {
  float magnitude = 0.0f;
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < out; ++j) {
      float sum = 0.0f;
      for (int k = 0; k < in; ++k) sum += std::fabs(x[size_t(r) * in + k] * w[size_t(j) * in + k]);
      magnitude = std::max(magnitude, sum * row_scale[size_t(j)]);
    }
  }
  return magnitude;
}

// Weight rows that differ in magnitude by up to 7x, so per-channel scales differ.
inline std::vector<float> random_weight(int out, int in, std::mt19937& rng) {
  std::vector<float> w = random_bf16_values(size_t(out) * in, rng, 0.05f);
  for (int r = 0; r < out; ++r) {
    for (int k = 0; k < in; ++k) w[size_t(r) * in + k] *= float(1 + r % 7);
  }
  return w;
}

// One decode GEMM as its kernel reads it, and the CPU reference's result.
struct ReferenceGemm {
  std::vector<uint8_t> x, w;    // row-major bytes: bf16 values (x of Bf16, Int8; w of Bf16), E4M3 or int8 codes
  float x_scale = 1.0f;         // Fp8: the static activation scale
  std::vector<float> w_scales;  // Fp8PerTensor: 1, Fp8PerChannel and Int8: `out`, Bf16: none
  std::vector<float> want;      // rows × out
  float magnitude = 0.0f;       // M above
};

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> bytes(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(bytes.data(), v.data(), bytes.size());
  return bytes;
}

// x (rows × in) and w (out × in) hold bf16 values; bias (`out` values, or null) is added by the reference.
inline ReferenceGemm reference_gemm(GemmFormat format, const std::vector<float>& x, const std::vector<float>& w,
                                    const float* bias, int rows, int in, int out) {
  ReferenceGemm g;
  g.want.resize(size_t(rows) * out);
  if (format == GemmFormat::Bf16) {
    cpu::matmul(x.data(), w.data(), bias, g.want.data(), rows, in, out, nullptr);
    g.magnitude = max_abs_dot(x, w, std::vector<float>(size_t(out), 1.0f), rows, in, out);
    g.x = bytes_of(to_bf16(x));
    g.w = bytes_of(to_bf16(w));
  } else if (format == GemmFormat::Int8) {
    g.w_scales.resize(size_t(out));
    std::vector<int8_t> w_q(w.size());
    cpu::quantize_int8_per_channel(w.data(), out, in, g.w_scales.data(), w_q.data());
    cpu::int8_wo_gemm(x.data(), w_q.data(), g.w_scales.data(), bias, g.want.data(), rows, in, out);
    std::vector<float> w_codes(w.size());
    for (size_t i = 0; i < w.size(); ++i) w_codes[i] = float(w_q[i]);
    g.magnitude = max_abs_dot(x, w_codes, g.w_scales, rows, in, out);
    g.x = bytes_of(to_bf16(x));
    g.w = bytes_of(w_q);
  } else {
    const bool per_channel = format == GemmFormat::Fp8PerChannel;
    std::vector<uint8_t> w_q(w.size());
    if (per_channel) {
      for (int r = 0; r < out; ++r) {
        g.w_scales.push_back(cpu::fp8_scale_for_amax(cpu::amax(w.data() + size_t(r) * in, size_t(in))));
      }
      cpu::quantize_fp8_per_channel(w.data(), out, in, g.w_scales.data(), w_q.data());
    } else {
      g.w_scales.push_back(cpu::fp8_scale_for_amax(cpu::amax(w.data(), w.size())));
      cpu::quantize_fp8_per_tensor(w.data(), w.size(), g.w_scales[0], w_q.data());
    }
    // A static scale below the amax's: the largest activations saturate, as calibrated scales let them.
    g.x_scale = 0.8f * cpu::fp8_scale_for_amax(cpu::amax(x.data(), x.size()));
    std::vector<uint8_t> x_q(x.size());
    cpu::quantize_fp8_per_tensor(x.data(), x.size(), g.x_scale, x_q.data());
    cpu::fp8_gemm(x_q.data(), g.x_scale, w_q.data(), g.w_scales.data(), per_channel, bias, g.want.data(), rows, in,
                  out);
    std::vector<float> x_codes(x.size()), w_codes(w.size()), row_scale(static_cast<size_t>(out));
    for (size_t i = 0; i < x.size(); ++i) x_codes[i] = f8e4m3_to_float(x_q[i]);
    for (size_t i = 0; i < w.size(); ++i) w_codes[i] = f8e4m3_to_float(w_q[i]);
    for (int j = 0; j < out; ++j) row_scale[size_t(j)] = g.x_scale * g.w_scales[per_channel ? size_t(j) : 0];
    g.magnitude = max_abs_dot(x_codes, w_codes, row_scale, rows, in, out);
    g.x = std::move(x_q);
    g.w = std::move(w_q);
  }
  return g;
}

// Int8 codes of every value -128..127 in a 16 × 256 weight (the in-register conversion must be exact for each),
// through bf16 ones: row 0 of x picks single weights (one-hot at k = 5 and 200), row 1 sums each weight row. Every
// output is exact in fp32, so the kernels must match the reference to the bit.
struct Int8EveryCode {
  static constexpr int in = 256, out = 16, rows = 2;
  std::vector<int8_t> w_q;
  std::vector<float> x, w_scales, want;  // w_scales all 1
  Int8EveryCode() : w_q(size_t(out) * in), x(size_t(rows) * in, 0.0f), w_scales(size_t(out), 1.0f) {
    for (size_t i = 0; i < w_q.size(); ++i) w_q[i] = int8_t(int((i * 37 + i / in) % 256) - 128);
    x[5] = 1.0f;
    x[200] = 1.0f;
    for (int k = 0; k < in; ++k) x[size_t(in) + k] = 1.0f;
    want.resize(size_t(rows) * out);
    cpu::int8_wo_gemm(x.data(), w_q.data(), w_scales.data(), nullptr, want.data(), rows, in, out);
  }
};

// Runs `launch(y)` twice, each time into a fresh poisoned output (NaN; fp32 or bf16) of `rows` + 1 rows of `out`,
// and returns the first `rows` rows as floats. The row past the result must stay untouched, and the runs must agree
// bit for bit: the kernels' reduction order is fixed, so a difference means a race.
template <class Launch>
std::vector<float> run_twice_into_poison(int rows, int out, bool f32_out, const std::string& what, Launch launch) {
  const size_t n = size_t(rows) * out, padded = n + size_t(out);
  std::vector<float> results[2];
  for (std::vector<float>& result : results) {
    cuda::DeviceBuffer d_y = f32_out ? upload(std::vector<float>(padded, NAN)) : poisoned_bf16(padded);
    launch(d_y.data());
    QED_CUDA_CHECK(cudaDeviceSynchronize());
    result = f32_out ? download<float>(d_y, padded) : from_bf16(download<uint16_t>(d_y, padded));
    for (size_t i = n; i < padded; ++i) {
      EXPECT_TRUE(std::isnan(result[i])) << what << ": wrote past the last row at " << i;
    }
    result.resize(n);
  }
  for (size_t i = 0; i < results[0].size(); ++i) {
    if (std::memcmp(&results[0][i], &results[1][i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << ": two runs differ at " << i << ": " << results[0][i] << " vs " << results[1][i];
      break;
    }
  }
  return results[0];
}

// A launch description (cuda::SkinnyGemm, cuda::DecodeGemv) that must run: 1 row, 16 features, K = 64 of bf16 ones,
// over buffers it owns; the refusal tests change one thing at a time.
template <class Launch>
struct RunnableLaunch {
  cuda::DeviceBuffer operands = upload(std::vector<uint16_t>(1 << 15, 0x3F80)), y = cuda::DeviceBuffer(1 << 16);
  Launch g;
  RunnableLaunch() {
    g.x = operands.data();
    g.w = operands.data();
    g.y = y.data();
    g.rows = 1;
    g.out = 16;
    g.in = 64;
  }
};

// The refusals both launchers make, around a launch `good` that runs: rows 0 and max_rows + 1, K not a multiple of
// 8 bf16 or (with scales) of 16 int8, a `quantized` weight without scales, w off 16-byte alignment.
// `run(launch)` launches on the default stream.
template <class Launch, class Run>
void expect_shared_refusals(const Launch& good, int max_rows, cuda::SkinnyWeight quantized, Run run) {
  EXPECT_NO_THROW(run(good));
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  for (int rows : {0, max_rows + 1}) {
    Launch bad = good;
    bad.rows = rows;
    EXPECT_THROW(run(bad), std::exception) << "rows " << rows;
  }
  Launch bad = good;
  bad.in = 60;  // not a multiple of 8 bf16
  EXPECT_THROW(run(bad), std::exception);
  bad = good;
  bad.type = cuda::SkinnyWeight::Int8;
  bad.w_scales = static_cast<const float*>(good.w);
  bad.in = 40;  // a multiple of 8 but not of 16 int8
  EXPECT_THROW(run(bad), std::exception);
  bad = good;
  bad.type = quantized;  // no scales
  EXPECT_THROW(run(bad), std::exception);
  bad = good;
  bad.w = static_cast<const char*>(good.w) + 8;
  EXPECT_THROW(run(bad), std::exception);
}

}  // namespace qed::testing
