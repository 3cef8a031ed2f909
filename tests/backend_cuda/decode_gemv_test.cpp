// The decode GEMV family (decode_gemv.h) against the CPU reference of each weight format, on fresh random data for
// every check: cpu::matmul (bf16), cpu::fp8_gemm (E4M3 W8A8, per tensor and per channel, both decodings of the
// codes), cpu::int8_wo_gemm; every compiled variant × rows 1..4.
//
// Tolerances: every product is exact in fp32 (bf16·bf16, E4M3·E4M3, bf16·int8; the FP8 bit decoding's 2^-16 is a
// power of two) and the kernel sums in fp32 on the CUDA cores, so kernel and reference differ by fp32 summation
// order, ~sqrt(K) fp32 ulps of M = max over outputs of Σ_k |x_k w_k| (scales included): 1e-5 · M absolute, plus half
// a bf16 ulp relative for the bf16 output rounding (as skinny_gemm_test.cpp; its FP8 MMA allowance is not needed
// here). With random data an output is ~M/sqrt(K), so a wrong k pairing, row, feature, scale or bias is far outside.
//
// Shapes: in of one 16-byte vector, of a count of vectors no CTA size divides, of more vectors than a CTA's threads,
// and of more than one batch of loads of the widest variant (a second trip round the K loop); out not a multiple of
// any variant's features (1, 3, 17, 130).
#include "backend/cuda/decode_gemv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/pdl.h"
#include "core/dtype.h"
#include "cuda_test_util.h"
#include "decode_gemm_test_util.h"

namespace qed::testing {
namespace {

using DecodeGemvTest = CudaTest;

using Format = GemmFormat;

struct Case {
  Format format;
  int rows, in, out, variant;
  bool bias, f32_out = false, fp8_bits = false;
};

std::string describe(const Case& c) {
  return std::string(format_name(c.format)) + (c.fp8_bits ? " (bits)" : "") + " rows " + std::to_string(c.rows) +
         " in " + std::to_string(c.in) + " out " + std::to_string(c.out) + " variant " +
         cuda::decode_gemv_variant_name(c.variant) + (c.bias ? " +bias" : "") + (c.f32_out ? " f32" : " bf16") +
         " (element = row * out + j)";
}

std::vector<float> run_twice(cuda::DecodeGemv g, const Case& c, const std::string& what) {
  return run_twice_into_poison(c.rows, c.out, c.f32_out, what, [&](void* y) {
    g.y = y;
    cuda::decode_gemv(g, nullptr);
  });
}

// An fp32-output launch over exactly representable operands (the decoding checks), scales on the device.
cuda::DecodeGemv exact_launch(cuda::SkinnyWeight type, const cuda::DeviceBuffer& x, const cuda::DeviceBuffer& w,
                              const cuda::DeviceBuffer& scales, int rows, int in, int out, int variant) {
  cuda::DecodeGemv g;
  g.x = x.data();
  g.w = w.data();
  g.type = type;
  if (type == cuda::SkinnyWeight::Fp8E4m3) g.x_scale = scales.as<float>();
  g.w_scales = scales.as<float>();
  g.f32_out = true;
  g.rows = rows;
  g.out = out;
  g.in = in;
  g.variant = variant;
  return g;
}

void check(const Case& c, std::mt19937& rng) {
  const std::string what = describe(c);
  const std::vector<float> bias = random_bf16_values(size_t(c.out), rng, 0.5f);
  const std::vector<float> x = random_bf16_values(size_t(c.rows) * c.in, rng, 1.0f);
  const std::vector<float> w =
      c.format == Format::Bf16 ? random_bf16_values(size_t(c.out) * c.in, rng, 0.05f) : random_weight(c.out, c.in, rng);
  const ReferenceGemm ref = reference_gemm(c.format, x, w, c.bias ? bias.data() : nullptr, c.rows, c.in, c.out);
  const cuda::DeviceBuffer d_bias = upload(to_bf16(bias)), d_x = upload(ref.x), d_w = upload(ref.w);
  const cuda::DeviceBuffer d_x_scale = upload(std::vector<float>{ref.x_scale}), d_w_scales = upload(ref.w_scales);
  cuda::DecodeGemv g;
  g.x = d_x.data();
  g.w = d_w.data();
  g.rows = c.rows;
  g.out = c.out;
  g.in = c.in;
  g.variant = c.variant;
  g.f32_out = c.f32_out;
  g.fp8_bits = c.fp8_bits;
  g.bias = c.bias ? d_bias.as<uint16_t>() : nullptr;
  if (c.format == Format::Bf16) {
    g.type = cuda::SkinnyWeight::Bf16;
  } else if (c.format == Format::Int8) {
    g.type = cuda::SkinnyWeight::Int8;
    g.w_scales = d_w_scales.as<float>();
  } else {
    g.type = cuda::SkinnyWeight::Fp8E4m3;
    g.x_scale = d_x_scale.as<float>();
    g.w_scales = d_w_scales.as<float>();
    g.per_channel = c.format == Format::Fp8PerChannel;
  }
  const std::vector<float> got = run_twice(g, c, what);
  EXPECT_TRUE(
      all_close(got, ref.want, c.f32_out ? 0.0f : kBf16HalfUlp, kFp32SumTolerance * ref.magnitude + 1e-6f, what));
}

// (vectors along K, out) cycled over the cases: 1 vector; 65 (no CTA size divides it); 257 (more than 256 threads);
// 130 with out 130.
const std::pair<int, int> kShapes[] = {{1, 3}, {65, 17}, {257, 130}, {130, 1}};

int elems_per_vector(Format f) {
  return f == Format::Bf16 ? 8 : 16;
}

// Every variant × rows 1..4 for one format; shape, bias and output type vary across both.
void sweep(Format format, bool fp8_bits, bool f32_outputs, int seed) {
  std::mt19937 rng(seed);
  for (int variant = 0; variant < cuda::kDecodeGemvVariantCount; ++variant) {
    for (int rows = 1; rows <= cuda::kDecodeGemvMaxRows; ++rows) {
      const auto [vectors, out] = kShapes[size_t(variant + rows) % std::size(kShapes)];
      const bool bias = (variant + rows) % 3 != 0, f32_out = f32_outputs && (variant + 2 * rows) % 3 == 0;
      check({format, rows, vectors * elems_per_vector(format), out, variant, bias, f32_out, fp8_bits}, rng);
    }
  }
}

// FP8 needs no sm_89 here: below it the kernel decodes the codes with bit operations.
TEST_F(DecodeGemvTest, Bf16MatchesCpuMatmulForEveryVariantAndRowCount) {
  sweep(Format::Bf16, false, true, 91);
}

TEST_F(DecodeGemvTest, Fp8PerTensorMatchesCpuFp8GemmForEveryVariantAndRowCount) {
  sweep(Format::Fp8PerTensor, false, false, 92);
  sweep(Format::Fp8PerTensor, true, false, 93);
}

TEST_F(DecodeGemvTest, Fp8PerChannelMatchesCpuFp8GemmForEveryVariantAndRowCount) {
  sweep(Format::Fp8PerChannel, false, false, 94);
  sweep(Format::Fp8PerChannel, true, false, 95);
}

TEST_F(DecodeGemvTest, Int8MatchesCpuInt8WoGemmForEveryVariantAndRowCount) {
  sweep(Format::Int8, false, false, 96);
}

// 2049 vectors along K: more than one batch of loads for every variant (the widest takes 256 threads × 8 = 2048),
// so every lane goes round the K loop at least twice; the 14B down projection's K too.
TEST_F(DecodeGemvTest, LongReductionsTakeSeveralTripsRoundTheLoop) {
  std::mt19937 rng(97);
  for (int variant = 0; variant < cuda::kDecodeGemvVariantCount; ++variant) {
    check({Format::Bf16, 1 + variant % 4, 2049 * 8, 5, variant, true}, rng);
    check({Format::Int8, 4 - variant % 4, 2049 * 16, 3, variant, variant % 2 == 0}, rng);
    check({Format::Fp8PerChannel, 1 + (variant + 1) % 4, 2049 * 16, 2, variant, true, false, variant % 2 == 1}, rng);
  }
  check({Format::Bf16, 2, 13824, 9, 0, false}, rng);
  check({Format::Int8, 1, 13824, 9, 3, true}, rng);
}

// Every E4M3 code through both operands, for both decodings: activations holding all 256 codes against an identity
// weight, and every code as a weight row picked by one-hot activations; one product per output, so exact.
TEST_F(DecodeGemvTest, Fp8DecodingIsExactForEveryCode) {
  const int in = 256, out = 256, rows = 4;
  // NaN codes are not values (the quantizers never write them).
  auto code = [](int i) { return uint8_t((i & 0x7F) == 0x7F ? 0 : i); };
  std::vector<uint8_t> identity(size_t(out) * in, 0), x_codes(size_t(rows) * in), w_codes(size_t(out) * in),
      one_hot(size_t(rows) * in, 0);
  for (int j = 0; j < out; ++j) identity[size_t(j) * in + j] = 0x38;  // 1.0
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < in; ++k) x_codes[size_t(r) * in + k] = code((k + 64 * r) % 256);
    one_hot[size_t(r) * in + 3 * r] = 0x38;
  }
  for (int j = 0; j < out; ++j) {
    for (int k = 0; k < in; ++k) w_codes[size_t(j) * in + k] = code(j);
  }
  const float scale = 1.0f;
  const cuda::DeviceBuffer d_s = upload(std::vector<float>{scale});
  for (const auto& [x_q, w_q] : {std::pair{&x_codes, &identity}, std::pair{&one_hot, &w_codes}}) {
    std::vector<float> want(size_t(rows) * out);
    cpu::fp8_gemm(x_q->data(), scale, w_q->data(), &scale, false, nullptr, want.data(), rows, in, out);
    const cuda::DeviceBuffer d_x = upload(*x_q), d_w = upload(*w_q);
    for (bool bits : {false, true}) {
      for (int variant : {0, cuda::kDecodeGemvVariantCount - 1}) {
        cuda::DecodeGemv g = exact_launch(cuda::SkinnyWeight::Fp8E4m3, d_x, d_w, d_s, rows, in, out, variant);
        g.fp8_bits = bits;
        const Case c{Format::Fp8PerTensor, rows, in, out, variant, false, true, bits};
        const std::string what = describe(c) + (x_q == &x_codes ? ", codes in x" : ", codes in w");
        const std::vector<float> got = run_twice(g, c, what);
        for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << what << " element " << i;
      }
    }
  }
}

// Int8 codes -128..127 in one weight row, picked singly and summed, through bf16 ones (exact).
TEST_F(DecodeGemvTest, Int8DecodingIsExactForEveryCode) {
  const Int8EveryCode codes;
  const int in = codes.in, out = codes.out, rows = codes.rows;
  const std::vector<float>& want = codes.want;
  const cuda::DeviceBuffer d_x = upload(to_bf16(codes.x)), d_w = upload(codes.w_q), d_s = upload(codes.w_scales);
  for (int variant = 0; variant < cuda::kDecodeGemvVariantCount; ++variant) {
    const cuda::DecodeGemv g = exact_launch(cuda::SkinnyWeight::Int8, d_x, d_w, d_s, rows, in, out, variant);
    const Case c{Format::Int8, rows, in, out, variant, false, true};
    const std::vector<float> got = run_twice(g, c, describe(c));
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << describe(c) << " element " << i;
  }
}

// Programmatic dependent launch (a no-op below sm_90): a chain of GEMVs, each reading the previous one's output, all
// launched with pdl = true. The weights of every link are loaded before its pdl_wait(), x only after: a kernel that
// read x early would see the poison (NaN) the output buffers start with, or a stale link.
TEST_F(DecodeGemvTest, ChainedPdlLaunchesReadTheirPredecessorsOutput) {
  std::mt19937 rng(98);
  const int rows = 2, width = 1024, links = 6;
  std::vector<std::vector<float>> weights;
  std::vector<cuda::DeviceBuffer> d_weights, d_outputs;
  for (int l = 0; l < links; ++l) {
    weights.push_back(random_bf16_values(size_t(width) * width, rng, 0.03f));
    d_weights.push_back(upload(to_bf16(weights.back())));
    d_outputs.push_back(poisoned_bf16(size_t(rows) * width));
  }
  const std::vector<float> x0 = random_bf16_values(size_t(rows) * width, rng, 1.0f);
  const cuda::DeviceBuffer d_x0 = upload(to_bf16(x0));
  const bool was_enabled = cuda::pdl_enabled();
  const std::vector<cuda::DeviceInfo> devices = cuda::list_devices();
  cuda::set_pdl_enabled(devices[0].sm_major >= 9);  // as the backend does: the attribute only where PDL exists
  cudaStream_t stream = nullptr;
  QED_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int l = 0; l < links; ++l) {
    cuda::DecodeGemv g;
    g.x = l == 0 ? d_x0.data() : d_outputs[size_t(l - 1)].data();
    g.w = d_weights[size_t(l)].data();
    g.y = d_outputs[size_t(l)].data();
    g.rows = rows;
    g.out = width;
    g.in = width;
    g.variant = l % cuda::kDecodeGemvVariantCount;
    g.pdl = true;
    cuda::decode_gemv(g, stream);
  }
  QED_CUDA_CHECK(cudaStreamSynchronize(stream));
  QED_CUDA_CHECK(cudaStreamDestroy(stream));
  cuda::set_pdl_enabled(was_enabled);
  // Each link against the CPU on the GPU's own input to it (bf16 rounding of the links is the GPU's).
  std::vector<float> input = x0;
  for (int l = 0; l < links; ++l) {
    const std::vector<float> got = from_bf16(download<uint16_t>(d_outputs[size_t(l)], size_t(rows) * width));
    std::vector<float> want(got.size());
    cpu::matmul(input.data(), weights[size_t(l)].data(), nullptr, want.data(), rows, width, width, nullptr);
    const float magnitude =
        max_abs_dot(input, weights[size_t(l)], std::vector<float>(size_t(width), 1.0f), rows, width, width);
    EXPECT_TRUE(all_close(got, want, kBf16HalfUlp, kFp32SumTolerance * magnitude + 1e-6f, "link " + std::to_string(l)));
    input = got;
  }
}

// SiLU-and-mul in the epilogue (DecodeGemv::silu_mul) is the plain GEMV then silu_and_mul_bf16 bit for bit, bf16
// output and E4M3 codes, for every format, pairing variant and row count, on the 14B gate_up's K (5120) with an
// inter that no variant's pairs divide.
TEST_F(DecodeGemvTest, SiluMulEpilogueIsTheGemvThenSiluAndMulKernel) {
  std::mt19937 rng(99);
  const int in = 5120, inter = 1001, out = 2 * inter;
  for (Format format : {Format::Bf16, Format::Fp8PerTensor, Format::Fp8PerChannel, Format::Int8}) {
    const std::vector<float> x = random_bf16_values(size_t(cuda::kDecodeGemvMaxRows) * in, rng, 1.0f);
    const std::vector<float> w =
        format == Format::Bf16 ? random_bf16_values(size_t(out) * in, rng, 0.05f) : random_weight(out, in, rng);
    const ReferenceGemm ref = reference_gemm(format, x, w, nullptr, cuda::kDecodeGemvMaxRows, in, out);
    const cuda::DeviceBuffer d_x = upload(ref.x), d_w = upload(ref.w);
    const cuda::DeviceBuffer d_x_scale = upload(std::vector<float>{ref.x_scale}), d_w_scales = upload(ref.w_scales);
    const cuda::DeviceBuffer d_act_scale = upload(std::vector<float>{0.02f});
    for (int variant = 0; variant < cuda::kDecodeGemvVariantCount; ++variant) {
      if (!cuda::decode_gemv_silu_supports(variant, out)) continue;
      for (int rows = 1; rows <= cuda::kDecodeGemvMaxRows; ++rows) {
        const std::string what = describe({format, rows, in, out, variant, false});
        cuda::DecodeGemv g;
        g.x = d_x.data();
        g.w = d_w.data();
        g.rows = rows;
        g.out = out;
        g.in = in;
        g.variant = variant;
        g.type = format == Format::Bf16   ? cuda::SkinnyWeight::Bf16
                 : format == Format::Int8 ? cuda::SkinnyWeight::Int8
                                          : cuda::SkinnyWeight::Fp8E4m3;
        if (format != Format::Bf16) g.w_scales = d_w_scales.as<float>();
        if (g.type == cuda::SkinnyWeight::Fp8E4m3) g.x_scale = d_x_scale.as<float>();
        g.per_channel = format == Format::Fp8PerChannel;
        cuda::DeviceBuffer gate_up = poisoned_bf16(size_t(rows) * out), want = poisoned_bf16(size_t(rows) * inter);
        cuda::DeviceBuffer want_codes(size_t(rows) * inter);
        g.y = gate_up.data();
        cuda::decode_gemv(g, nullptr);
        cuda::silu_and_mul_bf16(gate_up.as<uint16_t>(), want.as<uint16_t>(), rows, inter, nullptr,
                                want_codes.as<uint8_t>(), d_act_scale.as<float>());
        cuda::DeviceBuffer got = poisoned_bf16(size_t(rows + 1) * inter), got_codes(size_t(rows + 1) * inter);
        QED_CUDA_CHECK(cudaMemset(got_codes.data(), 0xAB, got_codes.bytes()));
        g.y = got.data();
        g.silu_mul = true;
        g.y_fp8 = got_codes.as<uint8_t>();
        g.y_fp8_scale = d_act_scale.as<float>();
        cuda::decode_gemv(g, nullptr);
        QED_CUDA_CHECK(cudaDeviceSynchronize());
        const size_t n = size_t(rows) * inter;
        const std::vector<uint16_t> got_h = download<uint16_t>(got, n + inter), want_h = download<uint16_t>(want, n);
        const std::vector<uint8_t> codes_h = download<uint8_t>(got_codes, n + inter),
                                   want_codes_h = download<uint8_t>(want_codes, n);
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(got_h[i], want_h[i]) << what << " element " << i;
          ASSERT_EQ(codes_h[i], want_codes_h[i]) << what << " code " << i;
        }
        for (size_t i = n; i < n + inter; ++i) {
          ASSERT_EQ(got_h[i], 0x7FC1) << what << ": wrote past the last row at " << i;
          ASSERT_EQ(codes_h[i], 0xAB) << what << ": wrote a code past the last row at " << i;
        }
      }
    }
  }
}

TEST_F(DecodeGemvTest, RefusesShapesAndArgumentsItCannotTake) {
  const RunnableLaunch<cuda::DecodeGemv> launch;
  const cuda::DecodeGemv& g = launch.g;
  auto run = [](const cuda::DecodeGemv& l) { cuda::decode_gemv(l, nullptr); };
  expect_shared_refusals(g, cuda::kDecodeGemvMaxRows, cuda::SkinnyWeight::Fp8E4m3, run);
  for (int variant : {-1, cuda::kDecodeGemvVariantCount}) {
    cuda::DecodeGemv bad = g;
    bad.variant = variant;
    EXPECT_THROW(run(bad), std::exception) << "variant " << variant;
  }
  cuda::DecodeGemv bad = g;
  bad.out = 0;
  EXPECT_THROW(run(bad), std::exception);
  // SiLU-and-mul: a variant of one feature per CTA cannot pair rows; an odd out has no halves; no fp32 output; an
  // E4M3 output needs a scale and SiLU-and-mul.
  const int single = 5;  // w8f1u8
  ASSERT_EQ(cuda::kDecodeGemvVariants[single].features, 1);
  cuda::DecodeGemv silu = g;
  silu.silu_mul = true;
  silu.out = 2 * (g.out / 2);
  silu.f32_out = false;
  EXPECT_NO_THROW(run(silu));
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  bad = silu;
  bad.variant = single;
  EXPECT_THROW(run(bad), std::exception);
  bad = silu;
  bad.out = silu.out - 1;
  EXPECT_THROW(run(bad), std::exception);
  bad = silu;
  bad.f32_out = true;
  EXPECT_THROW(run(bad), std::exception);
  bad = silu;
  bad.y_fp8 = static_cast<uint8_t*>(const_cast<void*>(g.x));
  EXPECT_THROW(run(bad), std::exception);
  bad = g;
  bad.y_fp8 = static_cast<uint8_t*>(const_cast<void*>(g.x));
  bad.y_fp8_scale = static_cast<const float*>(g.x);
  EXPECT_THROW(run(bad), std::exception);
}

}  // namespace
}  // namespace qed::testing
