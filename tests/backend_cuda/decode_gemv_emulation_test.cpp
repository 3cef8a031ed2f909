// The decode GEMV kernel (decode_gemv_tile.cuh) run on the CPU: every CUDA thread of a CTA is a std::thread,
// __syncthreads and the warp shuffle meet at barriers, CTAs run one after another; the E4M3 cvt is emulated with
// core/dtype.h's exact conversions and the bit decoding is fp8_convert.cuh's own code. Every global load is checked
// against the buffers the test gave the kernel. So CI, which has no GPU, checks every variant's K split, load batches
// (prefetch included), feature tails, reduction and epilogue against the CPU references, with the tolerances of
// decode_gemv_test.cpp (label gpu, the same kernel on the device).
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/decode_gemv.h"
#include "core/dtype.h"
#include "decode_gemm_test_util.h"

// ---- The emulated CUDA environment the kernel body is compiled against. ----
#include "emulated_cuda.h"

namespace qed::testing::gemv_emulation {

// The buffers the CTA may load from.
struct Cta {
  emulated::Range weights, activations;
};
inline Cta* cta = nullptr;

}  // namespace qed::testing::gemv_emulation

inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline int __float2int_rn(float a) {
  return int(std::nearbyint(a));
}

namespace qed::cuda {
using std::isnan;
using std::min;
}  // namespace qed::cuda

// The kernel's bit decoding of E4M3, compiled against the emulation above.
#include "backend/cuda/fp8_convert.cuh"

namespace qed::cuda {
namespace {

uint4 load_weight_vector(const uint4* p) {
  return testing::emulated::checked_load_16(p, testing::gemv_emulation::cta->weights, "weight load outside the weight");
}

uint4 load_x_vector(const uint4* p) {
  return testing::emulated::checked_load_16(p, testing::gemv_emulation::cta->activations, "activation load outside x");
}

float2 f16x2_to_float2(uint32_t pair) {
  return make_float2(f16_to_float(uint16_t(pair & 0xFFFFu)), f16_to_float(uint16_t(pair >> 16)));
}

// The sm_89+ instruction: each code's exact value as an f16.
void e4m3x4_to_f16x2_cvt(uint32_t codes, uint32_t& lo, uint32_t& hi) {
  uint16_t h[4];
  for (int i = 0; i < 4; ++i) h[i] = float_to_f16(f8e4m3_to_float(uint8_t(codes >> (8 * i))));
  lo = uint32_t(h[0]) | (uint32_t(h[1]) << 16);
  hi = uint32_t(h[2]) | (uint32_t(h[3]) << 16);
}

float fp8_cvt_scale_fix() {
  return 1.0f;
}

void pdl_wait() {}
void pdl_trigger() {}

}  // namespace
}  // namespace qed::cuda

#include "backend/cuda/decode_gemv_tile.cuh"

#undef threadIdx
#undef blockIdx
#undef gridDim
#undef __shared__

namespace qed::testing {
namespace {

namespace emu = emulated;

// Every CTA of the launch, one after another, each as WARPS · 32 threads.
template <class F, int ROWS, int WARPS, int FEATURES, int UNROLL, bool PREFETCH>
void emulate_launch(const cuda::GemvParams& p, emu::Range weights, emu::Range activations) {
  auto state = std::make_unique<gemv_emulation::Cta>();
  state->weights = weights;
  state->activations = activations;
  gemv_emulation::cta = state.get();
  const unsigned blocks = unsigned((p.out + FEATURES - 1) / FEATURES);
  for (unsigned b = 0; b < blocks; ++b) {
    emu::run_cta({b, 0, 0}, WARPS * 32,
                 [&p] { cuda::decode_gemv_kernel<F, ROWS, WARPS, FEATURES, UNROLL, PREFETCH>(p); });
  }
  gemv_emulation::cta = nullptr;
}

template <class F, int ROWS, int V>
void emulate_variant(const cuda::GemvParams& p, emu::Range w, emu::Range x) {
  constexpr cuda::DecodeGemvVariant v = cuda::kDecodeGemvVariants[V];
  emulate_launch<F, ROWS, v.warps, v.features, v.unroll, v.prefetch>(p, w, x);
}

template <class F, int ROWS, int... V>
void emulate_rows(const cuda::GemvParams& p, int variant, emu::Range w, emu::Range x,
                  std::integer_sequence<int, V...>) {
  ((variant == V ? emulate_variant<F, ROWS, V>(p, w, x) : void()), ...);
}

template <class F>
void emulate(const cuda::GemvParams& p, int rows, int variant, emu::Range w, emu::Range x) {
  const auto variants = std::make_integer_sequence<int, cuda::kDecodeGemvVariantCount>{};
  switch (rows) {
    case 1:
      emulate_rows<F, 1>(p, variant, w, x, variants);
      break;
    case 2:
      emulate_rows<F, 2>(p, variant, w, x, variants);
      break;
    case 3:
      emulate_rows<F, 3>(p, variant, w, x, variants);
      break;
    default:
      emulate_rows<F, 4>(p, variant, w, x, variants);
      break;
  }
}

enum class Format { Bf16, Fp8Cvt, Fp8Bits, Fp8PerChannel, Int8 };

struct Case {
  Format format;
  int rows, in, out, variant;
  bool bias, f32_out;
};

std::string describe(const Case& c) {
  static const char* const kNames[] = {"bf16", "fp8 cvt", "fp8 bits", "fp8 per-channel (bits)", "int8"};
  return std::string(kNames[int(c.format)]) + " rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) +
         " out " + std::to_string(c.out) + " variant " + cuda::decode_gemv_variant_name(c.variant) +
         (c.bias ? " +bias" : "") + (c.f32_out ? " f32" : " bf16");
}

// 16-byte aligned host storage (the kernel's vector loads check alignment).
struct Aligned {
  std::vector<uint4> storage;
  template <class T>
  explicit Aligned(const std::vector<T>& v) : storage((v.size() * sizeof(T) + 15) / 16 + 1) {
    std::memcpy(storage.data(), v.data(), v.size() * sizeof(T));
  }
  const char* data() const { return reinterpret_cast<const char*>(storage.data()); }
  emu::Range range(size_t bytes) const { return {storage.data(), bytes}; }
};

GemmFormat gemm_format(Format f) {
  switch (f) {
    case Format::Bf16:
      return GemmFormat::Bf16;
    case Format::Fp8Cvt:
    case Format::Fp8Bits:
      return GemmFormat::Fp8PerTensor;
    case Format::Fp8PerChannel:
      return GemmFormat::Fp8PerChannel;
    case Format::Int8:
      break;
  }
  return GemmFormat::Int8;
}

void emulate_format(Format format, const cuda::GemvParams& p, int rows, int variant, emu::Range w, emu::Range x) {
  switch (format) {
    case Format::Bf16:
      return emulate<cuda::Bf16Gemv>(p, rows, variant, w, x);
    case Format::Fp8Cvt:
      return emulate<cuda::Fp8CvtGemv>(p, rows, variant, w, x);
    case Format::Fp8Bits:
    case Format::Fp8PerChannel:
      return emulate<cuda::Fp8BitsGemv>(p, rows, variant, w, x);
    case Format::Int8:
      return emulate<cuda::Int8Gemv>(p, rows, variant, w, x);
  }
}

void check(const Case& c, std::mt19937& rng) {
  const std::string what = describe(c);
  const std::vector<float> x = random_bf16_values(size_t(c.rows) * c.in, rng, 1.0f);
  const std::vector<float> bias = random_bf16_values(size_t(c.out), rng, 0.5f);
  const std::vector<uint16_t> bias_bf16 = to_bf16(bias);
  // Quantized weights: rows that differ in magnitude, so per-channel scales differ (bf16 weights stay bf16 values).
  const std::vector<float> w =
      c.format == Format::Bf16 ? random_bf16_values(size_t(c.out) * c.in, rng, 0.05f) : random_weight(c.out, c.in, rng);
  const GemmFormat format = gemm_format(c.format);
  const ReferenceGemm ref = reference_gemm(format, x, w, c.bias ? bias.data() : nullptr, c.rows, c.in, c.out);
  const Aligned x_dev(ref.x), w_dev(ref.w);
  const bool fp8 = format == GemmFormat::Fp8PerTensor || format == GemmFormat::Fp8PerChannel;
  // One row more than the result, poisoned: it must stay untouched.
  std::vector<float> y_f32(size_t(c.rows + 1) * c.out, NAN);
  std::vector<uint16_t> y_bf16(size_t(c.rows + 1) * c.out, 0x7FC1);
  const cuda::GemvParams p{x_dev.data(),
                           w_dev.data(),
                           fp8 ? &ref.x_scale : nullptr,
                           format == GemmFormat::Bf16 ? nullptr : ref.w_scales.data(),
                           c.bias ? reinterpret_cast<const __nv_bfloat16*>(bias_bf16.data()) : nullptr,
                           c.f32_out ? static_cast<void*>(y_f32.data()) : static_cast<void*>(y_bf16.data()),
                           format == GemmFormat::Int8 || format == GemmFormat::Fp8PerChannel,
                           c.f32_out,
                           c.out,
                           c.in,
                           0,
                           nullptr,
                           nullptr};
  emulate_format(c.format, p, c.rows, c.variant, w_dev.range(ref.w.size()), x_dev.range(ref.x.size()));
  std::vector<float> got(y_f32.size());
  for (size_t i = 0; i < got.size(); ++i) got[i] = c.f32_out ? y_f32[i] : bf16_to_float(y_bf16[i]);
  for (size_t i = ref.want.size(); i < got.size(); ++i) {
    EXPECT_TRUE(std::isnan(got[i])) << what << ": wrote past the last row at " << i;
  }
  got.resize(ref.want.size());
  EXPECT_TRUE(
      all_close(got, ref.want, c.f32_out ? 0.0f : kBf16HalfUlp, kFp32SumTolerance * ref.magnitude + 1e-6f, what));
}

// Vectors along K × out: one vector; 65 (no CTA size divides it); 1100 (three batches of the prefetching variants,
// two or more of most); out never a multiple of 2, 4 or 8.
const std::pair<int, int> kShapes[] = {{1, 3}, {65, 9}, {1100, 2}};

TEST(DecodeGemvEmulation, EveryFormatAndVariantMatchesTheCpuReference) {
  std::mt19937 rng(123);
  for (Format format : {Format::Bf16, Format::Fp8Cvt, Format::Fp8Bits, Format::Fp8PerChannel, Format::Int8}) {
    for (int variant = 0; variant < cuda::kDecodeGemvVariantCount; ++variant) {
      const int f = int(format);
      const auto [vectors, out] = kShapes[size_t(variant + f) % std::size(kShapes)];
      const int rows = 1 + (variant + f) % cuda::kDecodeGemvMaxRows;
      check({format, rows, vectors * (format == Format::Bf16 ? 8 : 16), out, variant, (variant + f) % 2 == 0,
             format == Format::Bf16 && variant % 3 == 0},
            rng);
    }
  }
}

// SiLU-and-mul in the epilogue (GemvParams::glu_inter): a CTA pairs gate row n with up row inter + n, and the result
// must be, bit for bit, the plain GEMV's bf16 gate and up values through silu_and_mul_bf16's formula, and its E4M3
// codes those of the CPU quantizer. inter is odd (1, 5, 9): the last CTA's pairs run past it.
TEST(DecodeGemvEmulation, SiluMulEpilogueIsTheGemvThenSiluAndMul) {
  std::mt19937 rng(321);
  const int inters[] = {1, 5, 9};
  int case_index = 0;
  for (Format format : {Format::Bf16, Format::Fp8Cvt, Format::Fp8Bits, Format::Fp8PerChannel, Format::Int8}) {
    for (int variant = 0; variant < cuda::kDecodeGemvVariantCount; ++variant) {
      if (!cuda::decode_gemv_silu_supports(variant, 2)) continue;
      const int inter = inters[size_t(case_index) % std::size(inters)];
      const int rows = 1 + case_index % cuda::kDecodeGemvMaxRows;
      const int in = (case_index % 2 ? 3 : 33) * (format == Format::Bf16 ? 8 : 16);
      const bool bias = case_index % 3 == 0;
      ++case_index;
      const int out = 2 * inter;
      const std::string what = std::string("silu ") + describe({format, rows, in, out, variant, bias, false});
      const std::vector<float> x = random_bf16_values(size_t(rows) * in, rng, 1.0f);
      const std::vector<uint16_t> bias_bf16 = to_bf16(random_bf16_values(size_t(out), rng, 0.5f));
      const std::vector<float> w =
          format == Format::Bf16 ? random_bf16_values(size_t(out) * in, rng, 0.05f) : random_weight(out, in, rng);
      const ReferenceGemm ref = reference_gemm(gemm_format(format), x, w, nullptr, rows, in, out);
      const Aligned x_dev(ref.x), w_dev(ref.w);
      const bool fp8 = format != Format::Bf16 && format != Format::Int8;
      cuda::GemvParams p{x_dev.data(),
                         w_dev.data(),
                         fp8 ? &ref.x_scale : nullptr,
                         format == Format::Bf16 ? nullptr : ref.w_scales.data(),
                         bias ? reinterpret_cast<const __nv_bfloat16*>(bias_bf16.data()) : nullptr,
                         nullptr,
                         format == Format::Int8 || format == Format::Fp8PerChannel,
                         false,
                         out,
                         in,
                         0,
                         nullptr,
                         nullptr};
      const emu::Range w_range = w_dev.range(ref.w.size()), x_range = x_dev.range(ref.x.size());
      std::vector<uint16_t> plain(size_t(rows) * out);
      p.y = plain.data();
      emulate_format(format, p, rows, variant, w_range, x_range);

      const float act_scale = 0.01f;
      std::vector<uint16_t> want(size_t(rows) * inter);
      std::vector<uint8_t> want_codes(want.size());
      for (int r = 0; r < rows; ++r) {
        for (int n = 0; n < inter; ++n) {
          const float gate = bf16_to_float(plain[size_t(r) * out + n]);
          const float up = bf16_to_float(plain[size_t(r) * out + inter + n]);
          const size_t at = size_t(r) * inter + n;
          want[at] = float_to_bf16(cuda::silu_mul(gate, up));
          want_codes[at] = cpu::quantize_fp8(bf16_to_float(want[at]), act_scale);
        }
      }
      // One row more than the result, poisoned: it must stay untouched.
      std::vector<uint16_t> fused(want.size() + size_t(inter), 0x7FC1);
      std::vector<uint8_t> codes(fused.size(), 0xAB);
      p.y = fused.data();
      p.glu_inter = inter;
      p.y_fp8 = codes.data();
      p.y_fp8_scale = &act_scale;
      emulate_format(format, p, rows, variant, w_range, x_range);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(fused[i], want[i]) << what << " at " << i;
        ASSERT_EQ(codes[i], want_codes[i]) << what << " code at " << i;
      }
      for (size_t i = want.size(); i < fused.size(); ++i) {
        ASSERT_EQ(fused[i], 0x7FC1) << what << ": wrote past the last row at " << i;
        ASSERT_EQ(codes[i], 0xAB) << what << ": wrote a code past the last row at " << i;
      }
    }
  }
  EXPECT_GT(case_index, 0);
}

}  // namespace
}  // namespace qed::testing
