// The skinny decode GEMMs (gemv_kernels.h) against the CPU reference of each weight format, on fresh random data
// for every check: cpu::matmul (bf16), cpu::fp8_gemm (E4M3 W8A8, per tensor and per channel), cpu::int8_wo_gemm.
//
// Tolerances (as gemm_test.cpp / quant_gemm_test.cpp, same reasoning): every product is exact in fp32 (bf16·bf16,
// E4M3·E4M3, bf16·int8), so kernel and reference differ by fp32 summation order, bounded by ~sqrt(K) fp32 ulps of
// M = max over outputs of Σ_k |x_k w_k| (scales included): 1e-5 · M absolute, plus half a bf16 ulp relative for the
// bf16 output rounding. FP8 MMAs get 4e-4 · M (the FP8 tensor cores may keep ~14 bits of a running sum; the kernel
// restarts the MMA sum every 64 k, so the error should be far below that). With random data an output is ~M/sqrt(K),
// so a wrong k pairing, row, tile, scale or bias is far outside either bound.
//
// Shapes: row counts 1..16 (one and two n8 activation tiles, rows that leave part of a tile empty), every
// tiles_per_warp (1, 2, 4), split-K (none, 2, 3, the launcher's), `out` not a multiple of the CTA's features (partial
// tiles), `in` of one lane's vector, of a partial step, of more groups than the CTA has warps, and the 14B down
// projection's K = 13824.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/gemv_kernels.h"
#include "core/dtype.h"
#include "cuda_test_util.h"
#include "decode_gemm_test_util.h"

namespace qed::testing {
namespace {

using SkinnyGemmTest = CudaTest;

bool device_has_fp8() {
  const std::vector<cuda::DeviceInfo> devices = cuda::list_devices();
  return !devices.empty() && devices[0].sm_major * 10 + devices[0].sm_minor >= 89;
}

struct Case {
  int rows, in, out, tiles;
  bool bias, f32_out = false;
  int splits = 1;  // 0: the launcher's choice, with a workspace
  // Persistent grid on a pretend device of this many SMs (0: one CTA per unit): fewer CTAs than units.
  int persistent_sms = 0;
};

std::string describe(const char* format, const Case& c) {
  return std::string(format) + " rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " +
         std::to_string(c.out) + " tiles " + std::to_string(c.tiles) + " splits " + std::to_string(c.splits) +
         (c.persistent_sms ? " persistent on " + std::to_string(c.persistent_sms) + " SMs" : "") +
         (c.bias ? " +bias" : "") + (c.f32_out ? " f32" : " bf16") + " (element = row * out + j)";
}

// Runs the kernel twice (run_twice_into_poison: untouched row past the result, bit-identical runs), returns the
// result rows as floats. Split-K launches get a workspace and zeroed counters, shared by both runs (the first must
// re-arm the counters).
std::vector<float> run_skinny(cuda::SkinnyGemm g, const Case& c, const std::string& what) {
  g.splits = c.splits;
  g.persistent = c.persistent_sms > 0;
  if (g.persistent) g.multiprocessors = c.persistent_sms;
  const int counters = c.out / 16 + 1;
  const cuda::DeviceBuffer d_counters = upload(std::vector<unsigned>(size_t(counters), 0u));
  size_t workspace_bytes = 0;  // the most any tiling with 64 splits takes
  for (int tiles : {1, 2, 4}) {
    workspace_bytes = std::max(workspace_bytes, cuda::skinny_gemm_workspace_bytes(c.rows, c.out, tiles, 64));
  }
  const cuda::DeviceBuffer d_workspace = upload(std::vector<float>(workspace_bytes / sizeof(float), NAN));
  if (c.splits != 1) {
    g.workspace = d_workspace.as<float>();
    g.workspace_bytes = workspace_bytes;
    g.counters = d_counters.as<unsigned>();
    g.counter_count = counters;
  }
  return run_twice_into_poison(c.rows, c.out, c.f32_out, what, [&](void* y) {
    g.y = y;
    cuda::skinny_gemm(g, nullptr);
  });
}

void check(GemmFormat format, const Case& c, std::mt19937& rng) {
  std::vector<float> x, w;
  if (format == GemmFormat::Bf16) {
    x = random_bf16_values(size_t(c.rows) * c.in, rng, 1.0f);
    w = random_bf16_values(size_t(c.out) * c.in, rng, 0.05f);
  } else {
    w = random_weight(c.out, c.in, rng);
    x = random_bf16_values(size_t(c.rows) * c.in, rng, 1.0f);
  }
  const std::vector<float> bias = random_bf16_values(size_t(c.out), rng, 0.5f);
  const ReferenceGemm ref = reference_gemm(format, x, w, c.bias ? bias.data() : nullptr, c.rows, c.in, c.out);
  const cuda::DeviceBuffer d_x = upload(ref.x), d_w = upload(ref.w), d_bias = upload(to_bf16(bias));
  const cuda::DeviceBuffer d_x_scale = upload(std::vector<float>{ref.x_scale}), d_w_scales = upload(ref.w_scales);
  cuda::SkinnyGemm g;
  g.x = d_x.data();
  g.w = d_w.data();
  const bool fp8 = format == GemmFormat::Fp8PerTensor || format == GemmFormat::Fp8PerChannel;
  g.type = format == GemmFormat::Bf16 ? cuda::SkinnyWeight::Bf16
           : fp8                      ? cuda::SkinnyWeight::Fp8E4m3
                                      : cuda::SkinnyWeight::Int8;
  if (fp8) g.x_scale = d_x_scale.as<float>();
  if (format != GemmFormat::Bf16) g.w_scales = d_w_scales.as<float>();
  g.per_channel = format == GemmFormat::Fp8PerChannel;
  g.bias = c.bias ? d_bias.as<uint16_t>() : nullptr;
  g.f32_out = c.f32_out;
  g.rows = c.rows;
  g.out = c.out;
  g.in = c.in;
  g.tiles_per_warp = c.tiles;
  const std::string what = describe(format_name(format), c);
  const std::vector<float> got = run_skinny(g, c, what);
  const float sum_tolerance = fp8 ? kFp8MmaTolerance : kFp32SumTolerance;
  EXPECT_TRUE(all_close(got, ref.want, c.f32_out ? 0.0f : kBf16HalfUlp, sum_tolerance * ref.magnitude + 1e-6f, what));
}

void check_bf16(const Case& c, std::mt19937& rng) {
  check(GemmFormat::Bf16, c, rng);
}

void check_fp8(const Case& c, bool per_channel, std::mt19937& rng) {
  check(per_channel ? GemmFormat::Fp8PerChannel : GemmFormat::Fp8PerTensor, c, rng);
}

void check_int8(const Case& c, std::mt19937& rng) {
  check(GemmFormat::Int8, c, rng);
}

// (in, out) pairs cycled over the row counts; in is a multiple of 16 (every format's vector). 16: one lane's vector;
// 528: a partial step; 2064: more 16-byte groups than a CTA has warps, with a partial last group; out 40, 72, 200:
// partial CTAs for every tiles_per_warp.
const std::vector<std::pair<int, int>> kShapes = {{16, 40}, {528, 72}, {2064, 200}, {1024, 129}};

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (int rows = 1; rows <= cuda::kSkinnyMaxRows; ++rows) {
    const auto [in, out] = kShapes[size_t(rows) % kShapes.size()];
    const int tiles = 1 << (rows % 3);  // 1, 2, 4 in turn
    const int splits = (rows / 3) % 4;  // 0 (the launcher's), 1, 2, 3 in turn
    cases.push_back({rows, in, out, tiles, rows % 2 == 1, false, splits});
  }
  return cases;
}

TEST_F(SkinnyGemmTest, Bf16MatchesCpuMatmulForEveryRowCount) {
  std::mt19937 rng(71);
  for (const Case& c : sweep()) check_bf16(c, rng);
  check_bf16({3, 8, 37, 1, true}, rng);  // in = one bf16 vector (8), the only shape narrower than 16
}

TEST_F(SkinnyGemmTest, Bf16Fp32OutputForLogits) {
  std::mt19937 rng(72);
  check_bf16({1, 896, 1000, 4, false, true}, rng);
  check_bf16({12, 264, 515, 2, false, true}, rng);
}

TEST_F(SkinnyGemmTest, Fp8PerTensorMatchesCpuFp8GemmForEveryRowCount) {
  if (!device_has_fp8()) GTEST_SKIP() << "FP8 MMAs need sm_89 or newer";
  std::mt19937 rng(73);
  for (const Case& c : sweep()) check_fp8(c, false, rng);
}

TEST_F(SkinnyGemmTest, Fp8PerChannelMatchesCpuFp8GemmForEveryRowCount) {
  if (!device_has_fp8()) GTEST_SKIP() << "FP8 MMAs need sm_89 or newer";
  std::mt19937 rng(74);
  for (const Case& c : sweep()) check_fp8(c, true, rng);
}

TEST_F(SkinnyGemmTest, Int8MatchesCpuInt8WoGemmForEveryRowCount) {
  std::mt19937 rng(75);
  for (const Case& c : sweep()) check_int8(c, rng);
}

// Int8 codes of every value -128..127 in one weight row (the in-register conversion must be exact for each), and
// the same weights through bf16 as the check.
TEST_F(SkinnyGemmTest, Int8ConversionIsExactForEveryCode) {
  const Int8EveryCode codes;
  const int in = codes.in, out = codes.out, rows = codes.rows;
  const std::vector<float>& want = codes.want;
  const cuda::DeviceBuffer d_x = upload(to_bf16(codes.x)), d_w = upload(codes.w_q), d_s = upload(codes.w_scales);
  cuda::SkinnyGemm g;
  g.x = d_x.data();
  g.w = d_w.data();
  g.type = cuda::SkinnyWeight::Int8;
  g.w_scales = d_s.as<float>();
  g.f32_out = true;
  g.rows = rows;
  g.out = out;
  g.in = in;
  const std::vector<float> got = run_skinny(g, {rows, in, out, 0, false, true}, "int8 codes");
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << "element " << i;
}

// The 14B down projection's K (13824) with few outputs, so the CPU reference stays cheap; without a split, with the
// launcher's (2 for these shapes) and with more splits than some of them have groups of K.
TEST_F(SkinnyGemmTest, LongReductionOfTheDownProjection) {
  std::mt19937 rng(76);
  for (int splits : {1, 0, 7}) {
    check_bf16({16, 13824, 48, 1, true, false, splits}, rng);
    check_int8({9, 13824, 48, 2, true, false, splits}, rng);
    if (device_has_fp8()) check_fp8({5, 13824, 48, 4, true, false, splits}, true, rng);
  }
}

// A persistent grid smaller than the units (a pretend 1- or 3-SM device): each CTA takes several columns and splits.
TEST_F(SkinnyGemmTest, PersistentGridsTakeSeveralUnitsPerCta) {
  std::mt19937 rng(78);
  check_bf16({16, 2064, 200, 1, true, false, 4, 1}, rng);
  check_bf16({3, 5120, 1000, 2, false, true, 1, 3}, rng);
  check_int8({12, 2064, 200, 4, true, false, 2, 1}, rng);
  if (device_has_fp8()) check_fp8({7, 2064, 200, 2, true, false, 3, 3}, false, rng);
}

// More splits than the reduction has groups (in = 16: one group): the empty splits add zeros.
TEST_F(SkinnyGemmTest, SplitsWithoutWorkStillCompleteTheSum) {
  std::mt19937 rng(77);
  check_bf16({4, 16, 40, 1, true, false, 5}, rng);
  check_int8({12, 16, 72, 2, false, false, 3}, rng);
}

TEST_F(SkinnyGemmTest, RefusesShapesAndArgumentsItCannotTake) {
  const RunnableLaunch<cuda::SkinnyGemm> launch;
  const cuda::SkinnyGemm& g = launch.g;
  auto run = [](const cuda::SkinnyGemm& l) { cuda::skinny_gemm(l, nullptr); };
  expect_shared_refusals(g, cuda::kSkinnyMaxRows, cuda::SkinnyWeight::Int8, run);
  cuda::SkinnyGemm bad = g;
  bad.tiles_per_warp = 3;
  EXPECT_THROW(run(bad), std::exception);
  bad = g;
  bad.splits = 2;  // no workspace
  EXPECT_THROW(run(bad), std::exception);
}

}  // namespace
}  // namespace qed::testing
