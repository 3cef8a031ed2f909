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
  emulated::Range coherent[2];  // what load_coherent_vector may read: y and the norm weight
};
inline Cta* cta = nullptr;
// Set: the launch's CTAs run in this generator's random order (the last-CTA norm must not depend on which is last).
inline std::mt19937* cta_order = nullptr;

}  // namespace qed::testing::gemv_emulation

inline float rsqrtf(float a) {
  return 1.0f / std::sqrt(a);
}
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

uint4 load_coherent_vector(const uint4* p) {
  const testing::gemv_emulation::Cta& c = *testing::gemv_emulation::cta;
  return testing::emulated::checked_load_16(p, c.coherent[0].contains(p, 16) ? c.coherent[0] : c.coherent[1],
                                            "coherent load outside y and the norm weight");
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
  state->coherent[0] = {p.y, size_t(ROWS) * size_t(p.out) * 2};
  state->coherent[1] = {p.norm_weight, size_t(p.out) * 2};
  emu::grid_dim = {blocks, 1, 1};
  std::vector<unsigned> order(blocks);
  for (unsigned b = 0; b < blocks; ++b) order[b] = b;
  if (gemv_emulation::cta_order) std::shuffle(order.begin(), order.end(), *gemv_emulation::cta_order);
  for (unsigned i = 0; i < blocks; ++i) {
    emu::run_cta({order[i], 0, 0}, WARPS * 32,
                 [&p] { cuda::decode_gemv_kernel<F, ROWS, WARPS, FEATURES, UNROLL, PREFETCH>(p); });
    // The fused norm (the test poisons its output with 0xFF): only the launch's last CTA may write it; on the
    // device an earlier CTA's rows would race the last one's.
    if (p.norm_counter && i + 1 < blocks) {
      const auto* normed = reinterpret_cast<const unsigned char*>(p.norm_y);
      for (size_t k = 0; k < size_t(ROWS) * size_t(p.out) * 2; ++k) {
        if (normed[k] != 0xFF) {
          ADD_FAILURE() << "CTA " << order[i] << " (" << i + 1 << " of " << blocks << ") wrote the norm";
          break;
        }
      }
    }
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

void run_format(Format format, const cuda::GemvParams& p, int rows, int variant, emu::Range w_range,
                emu::Range x_range) {
  switch (format) {
    case Format::Bf16:
      emulate<cuda::Bf16Gemv>(p, rows, variant, w_range, x_range);
      break;
    case Format::Fp8Cvt:
      emulate<cuda::Fp8CvtGemv>(p, rows, variant, w_range, x_range);
      break;
    case Format::Fp8Bits:
    case Format::Fp8PerChannel:
      emulate<cuda::Fp8BitsGemv>(p, rows, variant, w_range, x_range);
      break;
    case Format::Int8:
      emulate<cuda::Int8Gemv>(p, rows, variant, w_range, x_range);
      break;
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
                           false};
  const emu::Range w_range = w_dev.range(ref.w.size()), x_range = x_dev.range(ref.x.size());
  run_format(c.format, p, c.rows, c.variant, w_range, x_range);
  std::vector<float> got(y_f32.size());
  for (size_t i = 0; i < got.size(); ++i) got[i] = c.f32_out ? y_f32[i] : bf16_to_float(y_bf16[i]);
  for (size_t i = ref.want.size(); i < got.size(); ++i) {
    EXPECT_TRUE(std::isnan(got[i])) << what << ": wrote past the last row at " << i;
  }
  got.resize(ref.want.size());
  EXPECT_TRUE(
      all_close(got, ref.want, c.f32_out ? 0.0f : kBf16HalfUlp, kFp32SumTolerance * ref.magnitude + 1e-6f, what));
  if (c.f32_out) return;

  // The residual add fused into the epilogue (add_to_y): bit-identical to the unfused GEMV output added to the
  // residual as rmsnorm_bf16 adds it, bf16(bf16(y) + residual); the poisoned row past the result stays untouched.
  const std::vector<uint16_t> residual = to_bf16(random_bf16_values(size_t(c.rows + 1) * c.out, rng, 4.0f));
  std::vector<uint16_t> fused = residual;
  cuda::GemvParams q = p;
  q.y = fused.data();
  q.add_to_y = true;
  run_format(c.format, q, c.rows, c.variant, w_range, x_range);
  for (size_t i = 0; i < fused.size(); ++i) {
    const uint16_t want =
        i < ref.want.size() ? float_to_bf16(bf16_to_float(y_bf16[i]) + bf16_to_float(residual[i])) : residual[i];
    ASSERT_EQ(fused[i], want) << what << " +residual: element " << i;
  }
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

// rmsnorm_row_kernel's result on each row of `x` (rows × dim): its order spelled out (per vector the sum of squares,
// per 32 vectors the butterfly, the warp sums in order), with rmsnorm_row.cuh's arithmetic. What the last CTA of a
// fused launch must write bit for bit (decode_gemv_test.cpp checks the same against rmsnorm_bf16 on the GPU).
void reference_norm(const std::vector<uint16_t>& x, const std::vector<uint16_t>& weight, int rows, int dim, float eps,
                    float scale, std::vector<uint16_t>& y, std::vector<uint8_t>& y_fp8) {
  const int vectors = dim / 8, warps = (vectors + 31) / 32;
  auto vec = [](const uint16_t* p, float(&out)[8]) {
    for (int j = 0; j < 8; ++j) out[j] = bf16_to_float(p[j]);
  };
  for (int r = 0; r < rows; ++r) {
    const uint16_t* row = x.data() + size_t(r) * dim;
    float total = 0.0f;
    for (int w = 0; w < warps; ++w) {
      float lanes[32];
      for (int l = 0; l < 32; ++l) {
        lanes[l] = 0.0f;
        const int v = w * 32 + l;
        if (v >= vectors) continue;
        float values[8];
        vec(row + v * 8, values);
        lanes[l] = cuda::rms_sum_sq8(values);
      }
      for (int step = 16; step > 0; step /= 2) {
        float next[32];
        for (int l = 0; l < 32; ++l) next[l] = lanes[l] + lanes[l ^ step];
        std::memcpy(lanes, next, sizeof(lanes));
      }
      total += lanes[0];
    }
    const float inv_rms = cuda::rms_inverse(total, dim, eps);
    for (int v = 0; v < vectors; ++v) {
      float values[8], w[8], out[8];
      vec(row + v * 8, values);
      vec(weight.data() + v * 8, w);
      cuda::rms_normalise8(values, inv_rms, w, out);
      const uint2 codes = cuda::rms_e4m3_codes8(out, scale);
      for (int j = 0; j < 8; ++j) {
        y[size_t(r) * dim + v * 8 + j] = float_to_bf16(out[j]);
        y_fp8[size_t(r) * dim + v * 8 + j] = uint8_t((j < 4 ? codes.x : codes.y) >> (8 * (j % 4)));
      }
    }
  }
}

// The next RMSNorm fused into the add_to_y launch (GemvParams::norm_counter): whichever CTA finishes last (random
// orders) normalises the complete residual rows, bit for bit the reference above, bf16 and E4M3 outputs, rows 1..4,
// CTAs of 2, 4 and 8 warps standing in for the norm's 1 to 3 (out 8: one vector; 136: a partial warp; 264: two
// warps; 520 on 2 warps: three, one CTA warp running two). The counter is zero again after each launch, and the
// second launch through it gives the same bits. (Few cases: every emulated CTA thread is a std::thread.)
struct NormCase {
  Format format;
  int variant, rows, out;
  bool fp8_out;
};
const NormCase kNormCases[] = {
    {Format::Bf16, 0, 1, 264, false},   {Format::Fp8Bits, 0, 4, 8, true}, {Format::Int8, 5, 2, 136, true},
    {Format::Fp8Cvt, 6, 3, 520, false}, {Format::Bf16, 6, 2, 8, true},    {Format::Fp8Bits, 8, 4, 264, true},
    {Format::Int8, 2, 3, 264, true},    {Format::Bf16, 7, 1, 136, false},
};

TEST(DecodeGemvEmulation, LastCtaNormMatchesTheRowNormBitForBit) {
  std::mt19937 rng(321), order(7);
  gemv_emulation::cta_order = &order;
  for (const NormCase& c : kNormCases) {
    const Format format = c.format;
    const int variant = c.variant, rows = c.rows, out = c.out, in = 2 * (format == Format::Bf16 ? 8 : 16);
    const bool fp8_out = c.fp8_out;
    const std::string what = "variant " + cuda::decode_gemv_variant_name(variant) + " rows " + std::to_string(rows) +
                             " out " + std::to_string(out) + (fp8_out ? " e4m3" : "");
    const std::vector<float> x = random_bf16_values(size_t(rows) * in, rng, 1.0f);
    const std::vector<float> w =
        format == Format::Bf16 ? random_bf16_values(size_t(out) * in, rng, 0.05f) : random_weight(out, in, rng);
    const GemmFormat gf = gemm_format(format);
    const ReferenceGemm ref = reference_gemm(gf, x, w, nullptr, rows, in, out);
    const Aligned x_dev(ref.x), w_dev(ref.w);
    const std::vector<uint16_t> residual = to_bf16(random_bf16_values(size_t(rows) * out, rng, 4.0f));
    const std::vector<uint16_t> norm_weight = to_bf16(random_bf16_values(size_t(out), rng, 1.0f));
    const Aligned weight_dev(norm_weight);
    const float eps = 1e-6f, scale = 0.0125f;
    const emu::Range w_range = w_dev.range(ref.w.size()), x_range = x_dev.range(ref.x.size());
    cuda::GemvParams p{x_dev.data(),
                       w_dev.data(),
                       gf == GemmFormat::Fp8PerTensor ? &ref.x_scale : nullptr,
                       gf == GemmFormat::Bf16 ? nullptr : ref.w_scales.data(),
                       nullptr,
                       nullptr,
                       gf == GemmFormat::Int8,
                       false,
                       out,
                       in,
                       true};
    std::vector<uint16_t> complete(residual.size()), want(residual.size());
    std::vector<uint8_t> want_fp8(residual.size());
    uint32_t counter = 0;
    for (int launch = 0; launch < 2; ++launch) {
      Aligned fused(residual);
      std::vector<uint4> normed((complete.size() * 2 + 15) / 16), normed_fp8((complete.size() + 15) / 16);
      std::memset(normed.data(), 0xFF, normed.size() * 16);
      std::memset(normed_fp8.data(), 0xFF, normed_fp8.size() * 16);
      cuda::GemvParams q = p;
      q.y = fused.storage.data();
      q.norm_counter = &counter;
      q.norm_weight = reinterpret_cast<const __nv_bfloat16*>(weight_dev.data());
      q.norm_y = reinterpret_cast<__nv_bfloat16*>(normed.data());
      q.norm_fp8 = fp8_out ? reinterpret_cast<uint8_t*>(normed_fp8.data()) : nullptr;
      q.norm_fp8_scale = fp8_out ? &scale : nullptr;
      q.norm_eps = eps;
      run_format(format, q, rows, variant, w_range, x_range);
      ASSERT_EQ(counter, 0u) << what << ": the last CTA re-arms the counter";
      if (launch == 0) {
        // The residual after the epilogue add (bit-exact to the unfused add: EveryFormatAndVariant...), which
        // the norm must have seen complete.
        std::memcpy(complete.data(), fused.data(), complete.size() * 2);
        reference_norm(complete, norm_weight, rows, out, eps, scale, want, want_fp8);
      }
      ASSERT_EQ(std::memcmp(fused.data(), complete.data(), complete.size() * 2), 0) << what << ": residual";
      const auto* got = reinterpret_cast<const uint16_t*>(normed.data());
      const auto* got_fp8 = reinterpret_cast<const uint8_t*>(normed_fp8.data());
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(got[i], want[i]) << what << " launch " << launch << ": normed element " << i;
        if (fp8_out) {
          ASSERT_EQ(got_fp8[i], want_fp8[i]) << what << " launch " << launch << ": e4m3 element " << i;
        }
      }
      if (!fp8_out) {
        EXPECT_EQ(got_fp8[0], 0xFF) << what << ": no fp8 output asked for";
      }
    }
  }
  gemv_emulation::cta_order = nullptr;
}

}  // namespace
}  // namespace qed::testing
