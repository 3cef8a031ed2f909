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

// ---- The emulated CUDA environment the kernel body is compiled against. ----
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace qed::testing::gemv_emulation {

struct Index {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local Index thread_index, block_index;

struct Range {
  const void* begin = nullptr;
  size_t bytes = 0;
  bool contains(const void* p, size_t n) const {
    const auto* b = static_cast<const unsigned char*>(begin);
    const auto* q = static_cast<const unsigned char*>(p);
    return b && q >= b && q + n <= b + bytes;
  }
};

struct Cta {
  std::barrier<>* all = nullptr;
  std::barrier<>* warp[8] = {};
  float value[8][32] = {};
  Range weights, activations;
};
inline Cta* cta = nullptr;

[[noreturn]] inline void fail_access(const char* what, const void* at) {
  std::fprintf(stderr, "emulated decode_gemv kernel: %s at %p\n", what, at);
  std::abort();
}

}  // namespace qed::testing::gemv_emulation

#define threadIdx ::qed::testing::gemv_emulation::thread_index
#define blockIdx ::qed::testing::gemv_emulation::block_index
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__ static  // one CTA at a time: a function's statics are its shared memory

inline void __syncthreads() {
  qed::testing::gemv_emulation::cta->all->arrive_and_wait();
}

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  using namespace qed::testing::gemv_emulation;
  const int w = int(thread_index.x) / 32, l = int(thread_index.x) % 32;
  cta->value[w][l] = v;
  cta->warp[w]->arrive_and_wait();
  const float r = cta->value[w][l ^ lane_mask];
  cta->warp[w]->arrive_and_wait();
  return r;
}

inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t bytes = uint64_t(x) | (uint64_t(y) << 32);
  unsigned r = 0;
  for (int n = 0; n < 4; ++n) r |= unsigned((bytes >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
  return r;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fadd_rn(float a, float b) {
  return a + b;
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

uint4 load_16(const void* p, const testing::gemv_emulation::Range& range, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0 || !range.contains(p, 16)) {
    testing::gemv_emulation::fail_access(what, p);
  }
  uint4 v;
  std::memcpy(&v, p, 16);
  return v;
}

uint4 load_weight_vector(const uint4* p) {
  return load_16(p, testing::gemv_emulation::cta->weights, "weight load outside the weight");
}

uint4 load_x_vector(const uint4* p) {
  return load_16(p, testing::gemv_emulation::cta->activations, "activation load outside x");
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
#undef __shared__

namespace qed::testing {
namespace {

namespace emu = gemv_emulation;

constexpr float kFp32SumTolerance = 1e-5f;
constexpr float kBf16HalfUlp = 1.0f / 256.0f;

// Every CTA of the launch, one after another, each as WARPS · 32 threads.
template <class F, int ROWS, int WARPS, int FEATURES, int UNROLL, bool PREFETCH>
void emulate_launch(const cuda::GemvParams& p, emu::Range weights, emu::Range activations) {
  auto state = std::make_unique<emu::Cta>();
  state->weights = weights;
  state->activations = activations;
  emu::cta = state.get();
  const unsigned blocks = unsigned((p.out + FEATURES - 1) / FEATURES);
  for (unsigned b = 0; b < blocks; ++b) {
    std::barrier<> all(WARPS * 32);
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    for (int w = 0; w < WARPS; ++w) {
      warps.push_back(std::make_unique<std::barrier<>>(32));
      state->warp[w] = warps.back().get();
    }
    state->all = &all;
    std::vector<std::thread> threads;
    for (int t = 0; t < WARPS * 32; ++t) {
      threads.emplace_back([&, t] {
        emu::thread_index = {unsigned(t), 0, 0};
        emu::block_index = {b, 0, 0};
        cuda::decode_gemv_kernel<F, ROWS, WARPS, FEATURES, UNROLL, PREFETCH>(p);
      });
    }
    for (std::thread& thread : threads) thread.join();
  }
  emu::cta = nullptr;
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

std::vector<float> random_values(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_float(float_to_bf16(dist(rng)));
  return v;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

float max_abs_dot(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& row_scale,
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

void check(const Case& c, std::mt19937& rng) {
  const std::string what = describe(c);
  const std::vector<float> x = random_values(size_t(c.rows) * c.in, rng, 1.0f);
  const std::vector<float> bias = random_values(size_t(c.out), rng, 0.5f);
  const std::vector<uint16_t> bias_bf16 = to_bf16(bias);
  std::vector<float> w = random_values(size_t(c.out) * c.in, rng, 0.05f);
  // Quantized weights: rows that differ in magnitude by up to 7x, so per-channel scales differ (bf16 weights stay
  // bf16 values).
  for (int r = 0; r < c.out && c.format != Format::Bf16; ++r) {
    for (int k = 0; k < c.in; ++k) w[size_t(r) * c.in + k] *= float(1 + r % 7);
  }
  std::vector<float> want(size_t(c.rows) * c.out), w_scales, row_scale(size_t(c.out), 1.0f);
  float x_scale = 1.0f;
  std::unique_ptr<Aligned> x_dev, w_dev;
  size_t x_bytes = 0, w_bytes = 0;
  bool per_channel = false;
  float magnitude = 0.0f;
  const float* bias_ref = c.bias ? bias.data() : nullptr;
  if (c.format == Format::Bf16) {
    cpu::matmul(x.data(), w.data(), bias_ref, want.data(), c.rows, c.in, c.out, nullptr);
    magnitude = max_abs_dot(x, w, row_scale, c.rows, c.in, c.out);
    x_dev = std::make_unique<Aligned>(to_bf16(x));
    w_dev = std::make_unique<Aligned>(to_bf16(w));
    x_bytes = x.size() * 2, w_bytes = w.size() * 2;
  } else if (c.format == Format::Int8) {
    w_scales.resize(size_t(c.out));
    std::vector<int8_t> w_q(w.size());
    cpu::quantize_int8_per_channel(w.data(), c.out, c.in, w_scales.data(), w_q.data());
    cpu::int8_wo_gemm(x.data(), w_q.data(), w_scales.data(), bias_ref, want.data(), c.rows, c.in, c.out);
    std::vector<float> codes(w.size());
    for (size_t i = 0; i < w.size(); ++i) codes[i] = float(w_q[i]);
    magnitude = max_abs_dot(x, codes, w_scales, c.rows, c.in, c.out);
    per_channel = true;
    x_dev = std::make_unique<Aligned>(to_bf16(x));
    w_dev = std::make_unique<Aligned>(w_q);
    x_bytes = x.size() * 2, w_bytes = w.size();
  } else {
    per_channel = c.format == Format::Fp8PerChannel;
    std::vector<uint8_t> w_q(w.size()), x_q(x.size());
    if (per_channel) {
      for (int r = 0; r < c.out; ++r) {
        w_scales.push_back(cpu::fp8_scale_for_amax(cpu::amax(w.data() + size_t(r) * c.in, size_t(c.in))));
      }
      cpu::quantize_fp8_per_channel(w.data(), c.out, c.in, w_scales.data(), w_q.data());
    } else {
      w_scales.push_back(cpu::fp8_scale_for_amax(cpu::amax(w.data(), w.size())));
      cpu::quantize_fp8_per_tensor(w.data(), w.size(), w_scales[0], w_q.data());
    }
    x_scale = 0.8f * cpu::fp8_scale_for_amax(cpu::amax(x.data(), x.size()));
    cpu::quantize_fp8_per_tensor(x.data(), x.size(), x_scale, x_q.data());
    cpu::fp8_gemm(x_q.data(), x_scale, w_q.data(), w_scales.data(), per_channel, bias_ref, want.data(), c.rows, c.in,
                  c.out);
    std::vector<float> x_codes(x.size()), w_codes(w.size());
    for (size_t i = 0; i < x.size(); ++i) x_codes[i] = f8e4m3_to_float(x_q[i]);
    for (size_t i = 0; i < w.size(); ++i) w_codes[i] = f8e4m3_to_float(w_q[i]);
    for (int j = 0; j < c.out; ++j) row_scale[size_t(j)] = x_scale * w_scales[per_channel ? size_t(j) : 0];
    magnitude = max_abs_dot(x_codes, w_codes, row_scale, c.rows, c.in, c.out);
    x_dev = std::make_unique<Aligned>(x_q);
    w_dev = std::make_unique<Aligned>(w_q);
    x_bytes = x.size(), w_bytes = w.size();
  }
  // One row more than the result, poisoned: it must stay untouched.
  std::vector<float> y_f32(size_t(c.rows + 1) * c.out, NAN);
  std::vector<uint16_t> y_bf16(size_t(c.rows + 1) * c.out, 0x7FC1);
  const cuda::GemvParams p{x_dev->data(),
                           w_dev->data(),
                           c.format == Format::Bf16 || c.format == Format::Int8 ? nullptr : &x_scale,
                           c.format == Format::Bf16 ? nullptr : w_scales.data(),
                           c.bias ? reinterpret_cast<const __nv_bfloat16*>(bias_bf16.data()) : nullptr,
                           c.f32_out ? static_cast<void*>(y_f32.data()) : static_cast<void*>(y_bf16.data()),
                           per_channel,
                           c.f32_out,
                           c.out,
                           c.in};
  const emu::Range w_range = w_dev->range(w_bytes), x_range = x_dev->range(x_bytes);
  switch (c.format) {
    case Format::Bf16:
      emulate<cuda::Bf16Gemv>(p, c.rows, c.variant, w_range, x_range);
      break;
    case Format::Fp8Cvt:
      emulate<cuda::Fp8CvtGemv>(p, c.rows, c.variant, w_range, x_range);
      break;
    case Format::Fp8Bits:
    case Format::Fp8PerChannel:
      emulate<cuda::Fp8BitsGemv>(p, c.rows, c.variant, w_range, x_range);
      break;
    case Format::Int8:
      emulate<cuda::Int8Gemv>(p, c.rows, c.variant, w_range, x_range);
      break;
  }
  std::vector<float> got(y_f32.size());
  for (size_t i = 0; i < got.size(); ++i) got[i] = c.f32_out ? y_f32[i] : bf16_to_float(y_bf16[i]);
  for (size_t i = want.size(); i < got.size(); ++i) {
    EXPECT_TRUE(std::isnan(got[i])) << what << ": wrote past the last row at " << i;
  }
  for (size_t i = 0; i < want.size(); ++i) {
    const float tolerance =
        (c.f32_out ? 0.0f : kBf16HalfUlp) * std::fabs(want[i]) + kFp32SumTolerance * magnitude + 1e-6f;
    if (!(std::fabs(got[i] - want[i]) <= tolerance)) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i] << " (tolerance "
                    << tolerance << ")";
      return;
    }
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

}  // namespace
}  // namespace qed::testing
