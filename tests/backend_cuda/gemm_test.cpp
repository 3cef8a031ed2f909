// The cuBLASLt GEMM wrapper against cpu::matmul on bf16-rounded inputs. Both accumulate in fp32 in different
// orders: the difference is bounded by ~sqrt(K) fp32 ulps of sum_k |x_k w_k|; 1e-5 × that sum (≈ 170 ulps at
// K = 13824) is the absolute term, plus half a bf16 ulp for the bf16 output rounding. A transposed operand or a
// wrong leading dimension is off by O(1) of that sum.
#include "backend/cuda/gemm.h"

#include "backend/cpu/cpu_ops.h"
#include "cuda_test_util.h"

namespace qed::testing {
namespace {

using GemmTest = CudaTest;

void check_gemm(cuda::Gemm& gemm, int rows, int in, int out, bool with_bias, cuda::GemmType y_type, std::mt19937& rng) {
  const std::vector<float> x = random_bf16_values(size_t(rows) * in, rng, 1.0f);
  const std::vector<float> w = random_bf16_values(size_t(out) * in, rng, 0.05f);
  const std::vector<float> bias = random_bf16_values(size_t(out), rng, 0.5f);
  std::vector<float> want(size_t(rows) * out);
  cpu::matmul(x.data(), w.data(), with_bias ? bias.data() : nullptr, want.data(), rows, in, out, nullptr);
  float magnitude = 0.0f;  // max over outputs of sum_k |x_k w_k|
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < out; ++j) {
      float sum = 0.0f;
      for (int k = 0; k < in; ++k) sum += std::fabs(x[size_t(r) * in + k] * w[size_t(j) * in + k]);
      magnitude = std::max(magnitude, sum);
    }
  }
  auto d_x = upload(to_bf16(x));
  auto d_w = upload(to_bf16(w));
  auto d_bias = upload(to_bf16(bias));
  const bool f32 = y_type == cuda::GemmType::F32;
  cuda::DeviceBuffer d_y = f32 ? upload(std::vector<float>(want.size(), NAN)) : poisoned_bf16(want.size());
  cuda::GemmWeight weight{d_w.data(), cuda::GemmType::BF16, out, in, nullptr};
  gemm.run(d_x.data(), cuda::GemmType::BF16, weight, with_bias ? d_bias.data() : nullptr, d_y.data(), y_type, rows,
           nullptr);
  const std::vector<float> got =
      f32 ? download<float>(d_y, want.size()) : from_bf16(download<uint16_t>(d_y, want.size()));
  const std::string what = "gemm " + std::to_string(rows) + "x" + std::to_string(in) + " -> " + std::to_string(out) +
                           (with_bias ? " +bias" : "") + (f32 ? " f32" : " bf16") + " (element = row * out + j)";
  // fp32 accumulation error: 1e-5 of sum |x w|. A bf16 output adds one rounding (half an ulp of the result); with a
  // bias, cuBLASLt's epilogue may round the product to bf16 before adding the bias (on an H200 at 4x4104 -> 129 the
  // error exceeded half an ulp of the result where the bias cancels the product), so half an ulp of the product too.
  std::vector<float> tolerance(want.size(), 1e-5f * magnitude + 1e-6f);
  if (!f32) {
    for (size_t i = 0; i < want.size(); ++i) {
      const float product = with_bias ? want[i] - bias[i % size_t(out)] : 0.0f;
      tolerance[i] += kBf16HalfUlp * (std::fabs(want[i]) + std::fabs(product));
    }
  }
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_LE(std::fabs(got[i] - want[i]), tolerance[i])
        << what << ": element " << i << " got " << got[i] << " want " << want[i];  // NaN fails
  }
}

TEST_F(GemmTest, Bf16MatchesCpuMatmulWithAndWithoutBias) {
  std::mt19937 rng(41);
  cuda::Gemm gemm;
  for (auto [rows, in, out] : std::vector<std::tuple<int, int, int>>{
           {1, 64, 192}, {7, 896, 1152}, {32, 512, 136}, {300, 160, 64}, {3, 13824, 40}}) {
    check_gemm(gemm, rows, in, out, false, cuda::GemmType::BF16, rng);
    check_gemm(gemm, rows, in, out, true, cuda::GemmType::BF16, rng);
  }
}

TEST_F(GemmTest, Fp32OutputForLogits) {
  std::mt19937 rng(42);
  cuda::Gemm gemm;
  check_gemm(gemm, 1, 64, 512, false, cuda::GemmType::F32, rng);
  check_gemm(gemm, 12, 896, 4000, false, cuda::GemmType::F32, rng);
}

// Decode row counts take the kernel decode_gemm_plan.h names (decode_gemv, the skinny kernel or cuBLASLt); these check
// Gemm::run's dispatch: odd feature counts leave part of a CTA's tiles unused, in_features 8 is a single 16-byte load
// per row, 4104 is not a multiple of any kernel's step, 17 rows is the first count past the decode plans.
TEST_F(GemmTest, DecodeRowCountsMatchCpuMatmulOnThePlannedKernel) {
  std::mt19937 rng(44);
  cuda::Gemm gemm;
  for (int rows : {1, 2, 4, 7, 8, 9, 13, 16, 17}) {
    for (auto [in, out] : std::vector<std::pair<int, int>>{{8, 37}, {4104, 129}, {5120, 16}, {136, 1001}}) {
      check_gemm(gemm, rows, in, out, rows % 2 == 0, cuda::GemmType::BF16, rng);
    }
    check_gemm(gemm, rows, 264, 515, false, cuda::GemmType::F32, rng);
  }
}

TEST_F(GemmTest, RepeatedShapesReuseThePlanAndStayCorrect) {
  std::mt19937 rng(43);
  cuda::Gemm gemm;
  for (int i = 0; i < 3; ++i) check_gemm(gemm, 5, 128, 96, i % 2 == 1, cuda::GemmType::BF16, rng);
}

}  // namespace
}  // namespace qed::testing
