// The quantized linear layers of the CUDA backend (quant_kernels.h, LinearRunner) against backend/cpu/quant_ops.h,
// the reference that defines the formats.
//
// Tolerances. The activation quantization is bit-exact (same fp32 division, same rounding). A GEMM result differs
// from the reference only by fp32 summation order (products of two E4M3 codes, and of a bf16 value and an int8
// code, are exact in fp32) plus the final bf16 rounding (half a bf16 ulp, relative), so the absolute term is a
// fraction of the output's magnitude M = max over outputs of sum_k |x_k w_k| (scales included):
//   bf16 tensor cores / fp32 GEMV: 1e-5 · M, as gemm_test.cpp (≈ sqrt(K) fp32 ulps);
//   FP8 tensor cores: 4e-4 · M: Hopper's FP8 MMA keeps about 14 significand bits of a partial sum before cuBLASLt
//   promotes it to fp32 (DeepSeek-V3 report, section 3.3.2), i.e. ≤ 2^-13 · M even when the truncation errors all
//   have one sign.
// With random data the outputs are ~M / sqrt(K) ≈ 0.015–0.03 M, so a wrong scale (even 10%), layout or row is
// far outside both bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/quant_ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemv_kernels.h"
#include "backend/cuda/norm_kernels.h"
#include "backend/cuda/quant_kernels.h"
#include "backend/cuda/quant_linear.h"
#include "core/dtype.h"
#include "cuda_test_util.h"

namespace qed::testing {
namespace {

using QuantKernelTest = CudaTest;
using QuantLinearTest = CudaTest;

// cuBLASLt's FP8 GEMMs need sm_89 (Ada) or newer; the int8 path and the kernels run on sm_80 too.
bool device_has_fp8() {
  const std::vector<cuda::DeviceInfo> devices = cuda::list_devices();
  return !devices.empty() && devices[0].sm_major * 10 + devices[0].sm_minor >= 89;
}

#define SKIP_WITHOUT_FP8() \
  if (!device_has_fp8()) GTEST_SKIP() << "FP8 GEMMs need sm_89 or newer"

constexpr float kFp8GemmTolerance = 4e-4f;
constexpr float kFp32SumTolerance = 1e-5f;

TEST_F(QuantKernelTest, Fp8ActivationQuantIsBitExactWithTheCpuOnEveryBf16) {
  std::vector<uint16_t> x(65536);
  std::iota(x.begin(), x.end(), uint16_t(0));
  const cuda::DeviceBuffer d_x = upload(x);
  cuda::DeviceBuffer d_q(x.size()), d_scale(sizeof(float));
  for (const float scale : {1.0f, 0.37f, 1.0f / 448.0f, 3.1e-3f, 17.5f, 2.5e-5f}) {
    d_scale.upload(&scale, sizeof(scale));
    cuda::quantize_fp8_bf16(d_x.as<uint16_t>(), x.size(), d_scale.as<float>(), d_q.as<uint8_t>(), nullptr);
    QED_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<uint8_t> got = download<uint8_t>(d_q, x.size());
    int mismatches = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const float value = bf16_to_float(x[i]);
      const uint8_t want = cpu::quantize_fp8(value, scale);
      if (got[i] != want && mismatches++ < 5) {
        ADD_FAILURE() << "bf16 0x" << std::hex << x[i] << std::dec << " (" << value << ") / " << scale << ": got 0x"
                      << std::hex << int(got[i]) << " want 0x" << int(want);
      }
      // core/dtype.h's conversion (an exhaustive nearest-value search) agrees off NaN.
      if (!std::isnan(value) && got[i] != float_to_f8e4m3(value / scale) && mismatches++ < 5) {
        ADD_FAILURE() << "bf16 0x" << std::hex << x[i] << std::dec << " / " << scale << ": got 0x" << std::hex
                      << int(got[i]) << " core/dtype 0x" << int(float_to_f8e4m3(value / scale));
      }
    }
    EXPECT_EQ(mismatches, 0) << "scale " << scale;
  }
}

TEST_F(QuantKernelTest, Fp8ActivationQuantHandlesALengthThatIsNotAMultipleOfEight) {
  std::mt19937 rng(7);
  const std::vector<float> x = random_bf16_values(37, rng, 3.0f);
  const cuda::DeviceBuffer d_x = upload(to_bf16(x));
  cuda::DeviceBuffer d_q = upload(std::vector<uint8_t>(48, 0xAB));
  const float scale = 0.01f;
  const cuda::DeviceBuffer d_scale = upload(std::vector<float>{scale});
  cuda::quantize_fp8_bf16(d_x.as<uint16_t>(), x.size(), d_scale.as<float>(), d_q.as<uint8_t>(), nullptr);
  const std::vector<uint8_t> got = download<uint8_t>(d_q, 48);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(got[i], cpu::quantize_fp8(x[i], scale)) << i;
  for (size_t i = x.size(); i < 48; ++i) EXPECT_EQ(got[i], 0xAB) << "wrote past the end at " << i;
}

TEST_F(QuantKernelTest, DynamicScaleIsTheCpuScaleOfTheAmax) {
  std::mt19937 rng(8);
  std::vector<float> x = random_bf16_values(100003, rng, 2.0f);
  x[77777] = -bf16_to_float(float_to_bf16(40.0f));  // the amax is a negative value deep inside
  const cuda::DeviceBuffer d_x = upload(to_bf16(x));
  cuda::DeviceBuffer d_scale(sizeof(float));
  cuda::dynamic_fp8_scale_bf16(d_x.as<uint16_t>(), x.size(), d_scale.as<float>(), nullptr);
  EXPECT_EQ(download<float>(d_scale, 1)[0], cpu::fp8_scale_for_amax(cpu::amax(x.data(), x.size())));
  const cuda::DeviceBuffer zeros = upload(std::vector<uint16_t>(1000, 0));
  cuda::dynamic_fp8_scale_bf16(zeros.as<uint16_t>(), 1000, d_scale.as<float>(), nullptr);
  EXPECT_EQ(download<float>(d_scale, 1)[0], 1.0f);
}

// The fused producers of FP8 layer inputs write the codes quantize_fp8 gives on their own bf16 outputs.
void expect_codes_of(const std::vector<uint16_t>& bf16_out, const std::vector<uint8_t>& codes, float scale,
                     const std::string& what) {
  ASSERT_EQ(bf16_out.size(), codes.size());
  int mismatches = 0;
  for (size_t i = 0; i < codes.size(); ++i) {
    const uint8_t want = cpu::quantize_fp8(bf16_to_float(bf16_out[i]), scale);
    if (codes[i] != want && mismatches++ < 5) {
      ADD_FAILURE() << what << ": element " << i << " (" << bf16_to_float(bf16_out[i]) << ") got 0x" << std::hex
                    << int(codes[i]) << " want 0x" << int(want);
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

TEST_F(QuantKernelTest, RmsNormWritesTheFp8CodesOfItsOutput) {
  std::mt19937 rng(9);
  const float scale = 3.0f / 448.0f;  // some outputs saturate
  const cuda::DeviceBuffer d_scale = upload(std::vector<float>{scale});
  // One vector per thread (896, 5120), the two-pass kernel (8200), the scalar one (900).
  for (const int dim : {896, 5120, 8200, 900}) {
    const int rows = dim == 5120 ? 2 : 5;
    const std::vector<float> x = random_bf16_values(size_t(rows) * dim, rng, 1.0f);
    const std::vector<float> residual = random_bf16_values(size_t(rows) * dim, rng, 1.0f);
    const std::vector<float> weight = random_bf16_values(size_t(dim), rng, 1.0f);
    for (bool with_residual : {false, true}) {
      const cuda::DeviceBuffer d_x = upload(to_bf16(x)), d_w = upload(to_bf16(weight));
      cuda::DeviceBuffer d_r = upload(to_bf16(residual));
      cuda::DeviceBuffer d_y = poisoned_bf16(x.size());
      cuda::DeviceBuffer d_q = upload(std::vector<uint8_t>(x.size(), 0xAB));
      cuda::rmsnorm_bf16(d_x.as<uint16_t>(), with_residual ? d_r.as<uint16_t>() : nullptr, d_w.as<uint16_t>(),
                         d_y.as<uint16_t>(), rows, dim, 1e-6f, nullptr, d_q.as<uint8_t>(), d_scale.as<float>());
      expect_codes_of(download<uint16_t>(d_y, x.size()), download<uint8_t>(d_q, x.size()), scale,
                      (with_residual ? "rmsnorm + residual dim " : "rmsnorm dim ") + std::to_string(dim));
    }
  }
}

TEST_F(QuantKernelTest, SiluAndMulWritesTheFp8CodesOfItsOutput) {
  std::mt19937 rng(10);
  const float scale = 0.5f / 448.0f;
  const cuda::DeviceBuffer d_scale = upload(std::vector<float>{scale});
  for (int inter : {160, 13}) {  // the vector path and the scalar one
    const int rows = 3;
    const std::vector<float> gate_up = random_bf16_values(size_t(rows) * 2 * inter, rng, 2.0f);
    const cuda::DeviceBuffer d_in = upload(to_bf16(gate_up));
    cuda::DeviceBuffer d_out = poisoned_bf16(size_t(rows) * inter);
    cuda::DeviceBuffer d_q = upload(std::vector<uint8_t>(size_t(rows) * inter + 8, 0xAB));
    cuda::silu_and_mul_bf16(d_in.as<uint16_t>(), d_out.as<uint16_t>(), rows, inter, nullptr, d_q.as<uint8_t>(),
                            d_scale.as<float>());
    expect_codes_of(download<uint16_t>(d_out, size_t(rows) * inter), download<uint8_t>(d_q, size_t(rows) * inter),
                    scale, "silu_and_mul inter " + std::to_string(inter));
  }
}

std::string shape_name(const char* kind, int rows, int in, int out) {
  return std::string(kind) + " " + std::to_string(rows) + "x" + std::to_string(in) + " -> " + std::to_string(out) +
         " (element = row * out + j)";
}

// Random weights whose rows differ in magnitude by up to 7x, so per-channel scales differ.
std::vector<float> random_weight(int out, int in, std::mt19937& rng) {
  std::vector<float> w = random_bf16_values(size_t(out) * in, rng, 0.05f);
  for (int r = 0; r < out; ++r) {
    for (int k = 0; k < in; ++k) w[size_t(r) * in + k] *= float(1 + r % 7);
  }
  return w;
}

struct Fp8Case {
  int rows, in, out;
  bool per_channel, static_input, with_bias;
};

void check_fp8_linear(const Fp8Case& c, std::mt19937& rng) {
  const std::vector<float> w = random_weight(c.out, c.in, rng);
  std::vector<float> w_scales;
  std::vector<uint8_t> w_q(w.size());
  if (c.per_channel) {
    for (int r = 0; r < c.out; ++r)
      w_scales.push_back(cpu::fp8_scale_for_amax(cpu::amax(w.data() + size_t(r) * c.in, size_t(c.in))));
    cpu::quantize_fp8_per_channel(w.data(), c.out, c.in, w_scales.data(), w_q.data());
  } else {
    w_scales.push_back(cpu::fp8_scale_for_amax(cpu::amax(w.data(), w.size())));
    cpu::quantize_fp8_per_tensor(w.data(), w.size(), w_scales[0], w_q.data());
  }
  const std::vector<float> x = random_bf16_values(size_t(c.rows) * c.in, rng, 1.0f);
  const std::vector<float> bias = random_bf16_values(size_t(c.out), rng, 0.5f);
  // A static scale below the amax's (so the largest activations saturate, as calibrated scales let them), or the
  // dynamic one the kernel computes from the amax.
  const float amax_scale = cpu::fp8_scale_for_amax(cpu::amax(x.data(), x.size()));
  const float x_scale = c.static_input ? 0.8f * amax_scale : amax_scale;
  std::vector<uint8_t> x_q(x.size());
  cpu::quantize_fp8_per_tensor(x.data(), x.size(), x_scale, x_q.data());
  std::vector<float> want(size_t(c.rows) * c.out);
  cpu::fp8_gemm(x_q.data(), x_scale, w_q.data(), w_scales.data(), c.per_channel, c.with_bias ? bias.data() : nullptr,
                want.data(), c.rows, c.in, c.out);
  std::vector<float> x_deq(x.size()), w_deq(w.size());
  cpu::dequantize_fp8_per_tensor(x_q.data(), x_q.size(), x_scale, x_deq.data());
  if (c.per_channel) {
    cpu::dequantize_fp8_per_channel(w_q.data(), c.out, c.in, w_scales.data(), w_deq.data());
  } else {
    cpu::dequantize_fp8_per_tensor(w_q.data(), w_q.size(), w_scales[0], w_deq.data());
  }
  float magnitude = 0.0f;
  for (int r = 0; r < c.rows; ++r) {
    for (int j = 0; j < c.out; ++j) {
      float sum = 0.0f;
      for (int k = 0; k < c.in; ++k) sum += std::fabs(x_deq[size_t(r) * c.in + k] * w_deq[size_t(j) * c.in + k]);
      magnitude = std::max(magnitude, sum);
    }
  }

  cuda::CudaLinear linear;
  linear.format = cuda::LinearFormat::Fp8;
  linear.out = c.out;
  linear.in = c.in;
  linear.weight = upload(w_q);
  linear.weight_scale = upload(w_scales);
  linear.per_channel = c.per_channel;
  if (c.static_input) linear.input_scale = upload(std::vector<float>{x_scale});
  if (c.with_bias) linear.bias = upload(to_bf16(bias));
  cuda::Gemm gemm;
  cuda::LinearRunner runner(gemm, std::vector<const cuda::CudaLinear*>{&linear}, c.rows);
  const cuda::DeviceBuffer d_x = upload(to_bf16(x));
  cuda::DeviceBuffer d_y = poisoned_bf16(want.size());
  runner.run(linear, d_x.as<uint16_t>(), d_y.as<uint16_t>(), c.rows, nullptr);
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = from_bf16(download<uint16_t>(d_y, want.size()));
  const std::string what = shape_name(c.per_channel ? "fp8 per-channel" : "fp8 per-tensor", c.rows, c.in, c.out) +
                           (c.static_input ? " static" : " dynamic") + (c.with_bias ? " +bias" : "");
  EXPECT_TRUE(all_close(got, want, kBf16HalfUlp, kFp8GemmTolerance * magnitude + 1e-6f, what));
}

// Row counts of the brief: decode (1, 7), a small prefill (64), a larger one (300).
const std::vector<std::tuple<int, int, int>> kShapes = {
    {1, 896, 1152}, {7, 896, 1152}, {64, 896, 1152}, {300, 896, 1152}, {1, 4864, 896}, {7, 4864, 896}, {64, 4864, 896}};

TEST_F(QuantLinearTest, Fp8PerTensorMatchesCpuFp8Gemm) {
  SKIP_WITHOUT_FP8();
  std::mt19937 rng(51);
  for (const auto& [rows, in, out] : kShapes) check_fp8_linear({rows, in, out, false, true, rows % 2 == 1}, rng);
}

TEST_F(QuantLinearTest, Fp8PerChannelMatchesCpuFp8Gemm) {
  SKIP_WITHOUT_FP8();
  std::mt19937 rng(52);
  for (const auto& [rows, in, out] : kShapes) check_fp8_linear({rows, in, out, true, true, rows % 2 == 0}, rng);
}

TEST_F(QuantLinearTest, Fp8DynamicActivationScaleMatchesCpuFp8Gemm) {
  SKIP_WITHOUT_FP8();
  std::mt19937 rng(53);
  check_fp8_linear({7, 896, 1152, false, false, true}, rng);
  check_fp8_linear({64, 896, 1152, true, false, false}, rng);
}

TEST_F(QuantLinearTest, Fp8PerChannelRunsBatchesLargerThanOneScratchChunk) {
  SKIP_WITHOUT_FP8();
  std::mt19937 rng(54);
  check_fp8_linear({1100, 64, 48, true, true, true}, rng);
}

void check_int8_linear(int rows, int in, int out, bool with_bias, std::mt19937& rng) {
  const std::vector<float> w = random_weight(out, in, rng);
  std::vector<float> w_scales(static_cast<size_t>(out));
  std::vector<int8_t> w_q(w.size());
  cpu::quantize_int8_per_channel(w.data(), out, in, w_scales.data(), w_q.data());
  const std::vector<float> x = random_bf16_values(size_t(rows) * in, rng, 1.0f);
  const std::vector<float> bias = random_bf16_values(size_t(out), rng, 0.5f);
  std::vector<float> want(size_t(rows) * out);
  cpu::int8_wo_gemm(x.data(), w_q.data(), w_scales.data(), with_bias ? bias.data() : nullptr, want.data(), rows, in,
                    out);
  float magnitude = 0.0f;
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < out; ++j) {
      float sum = 0.0f;
      for (int k = 0; k < in; ++k) sum += std::fabs(x[size_t(r) * in + k] * float(w_q[size_t(j) * in + k]));
      magnitude = std::max(magnitude, sum * w_scales[size_t(j)]);
    }
  }
  cuda::CudaLinear linear;
  linear.format = cuda::LinearFormat::Int8WeightOnly;
  linear.out = out;
  linear.in = in;
  linear.weight = upload(w_q);
  linear.weight_scale = upload(w_scales);
  linear.per_channel = true;
  if (with_bias) linear.bias = upload(to_bf16(bias));
  cuda::Gemm gemm;
  cuda::LinearRunner runner(gemm, std::vector<const cuda::CudaLinear*>{&linear},
                            std::max(rows, cuda::kSkinnyInt8Rows + 1));
  const cuda::DeviceBuffer d_x = upload(to_bf16(x));
  cuda::DeviceBuffer d_y = poisoned_bf16(want.size());
  runner.run(linear, d_x.as<uint16_t>(), d_y.as<uint16_t>(), rows, nullptr);
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = from_bf16(download<uint16_t>(d_y, want.size()));
  const std::string what =
      shape_name(rows <= cuda::kSkinnyInt8Rows ? "int8 skinny" : "int8 dequant+gemm", rows, in, out) +
      (with_bias ? " +bias" : "");
  EXPECT_TRUE(all_close(got, want, kBf16HalfUlp, kFp32SumTolerance * magnitude + 1e-6f, what));
}

TEST_F(QuantLinearTest, Int8WeightOnlyMatchesCpuInt8WoGemm) {
  std::mt19937 rng(61);
  for (const auto& [rows, in, out] : kShapes) check_int8_linear(rows, in, out, rows % 2 == 1, rng);
}

TEST_F(QuantLinearTest, Int8DecodeRowCountsAndTheFirstRowCountPastTheSkinnyKernel) {
  std::mt19937 rng(62);
  // out = 40: the last CTA's tiles are partly past the end; in = 16 and 528: one lane, and a partial step.
  for (int rows : {1, 2, 5, 8, 9, 12, cuda::kSkinnyInt8Rows}) {
    check_int8_linear(rows, 16, 40, true, rng);
    check_int8_linear(rows, 528, 40, false, rng);
  }
  for (int rows : {12, cuda::kSkinnyInt8Rows, cuda::kSkinnyInt8Rows + 1}) check_int8_linear(rows, 896, 1152, true, rng);
}

TEST_F(QuantLinearTest, Int8RunsBatchesLargerThanOneScratchChunk) {
  std::mt19937 rng(63);
  check_int8_linear(1100, 64, 48, true, rng);
}

TEST_F(QuantLinearTest, Fp8GemmRefusesShapesCublasLtCannotTake) {
  cuda::Gemm gemm;
  const cuda::DeviceBuffer buffer(4096);
  const cuda::GemmWeight w{buffer.data(), cuda::GemmType::F8_E4M3, 24, 64, nullptr};
  EXPECT_THROW(
      gemm.run(buffer.data(), cuda::GemmType::F8_E4M3, w, nullptr, buffer.data(), cuda::GemmType::BF16, 1, nullptr),
      std::exception);
  const cuda::GemmWeight mixed{buffer.data(), cuda::GemmType::F8_E4M3, 32, 64, nullptr};
  EXPECT_THROW(
      gemm.run(buffer.data(), cuda::GemmType::BF16, mixed, nullptr, buffer.data(), cuda::GemmType::BF16, 1, nullptr),
      std::exception);
}

}  // namespace
}  // namespace qed::testing
