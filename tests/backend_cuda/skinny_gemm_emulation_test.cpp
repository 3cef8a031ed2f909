// The skinny GEMM kernel (skinny_gemm_tile.cuh) run on the CPU: every CUDA thread of a CTA is a std::thread,
// __syncthreads, the warp shuffle and mma.sync meet at barriers, and mma.sync.m16n8k16 follows the PTX ISA's fragment
// layouts (groupID = lane / 4, threadID_in_group = lane % 4) on bf16 or f16 pairs; the E4M3 → f16 conversion is
// core/dtype.h's. CTAs run one after another (so the split-K fixup's last CTA is the last split). Every global
// access is checked against the buffers the test gave the kernel. So CI, which has no GPU, checks the kernel's
// fragment assignment, tiling, K ranges, tails, split-K fixup and epilogue against the CPU references, with the
// tolerances of skinny_gemm_test.cpp (label gpu, the same kernel on the device).
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
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "core/dtype.h"

// ---- The emulated CUDA environment the kernel body is compiled against. ----
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace qed::testing::skinny_emulation {

struct Index {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local Index thread_index, block_index;
inline Index grid_dim;

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
  int value[8][32] = {};
  uint32_t a[8][32][4] = {};
  uint32_t b[8][32][2] = {};
  Range weights, activations, workspace;
};
inline Cta* cta = nullptr;

inline int warp_of_thread() {
  return int(thread_index.x) / 32;
}
inline int lane_of_thread() {
  return int(thread_index.x) % 32;
}

[[noreturn]] inline void fail_access(const char* what, const void* at) {
  std::fprintf(stderr, "emulated skinny kernel: %s at %p\n", what, at);
  std::abort();
}

inline float half_of(uint32_t reg, int high, bool f16) {
  const uint16_t bits = uint16_t(high ? reg >> 16 : reg & 0xFFFFu);
  return f16 ? f16_to_float(bits) : bf16_to_float(bits);
}

}  // namespace qed::testing::skinny_emulation

#define threadIdx ::qed::testing::skinny_emulation::thread_index
#define blockIdx ::qed::testing::skinny_emulation::block_index
#define gridDim ::qed::testing::skinny_emulation::grid_dim
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
  qed::testing::skinny_emulation::cta->all->arrive_and_wait();
}

inline int __shfl_sync(unsigned, int v, int src_lane) {
  using namespace qed::testing::skinny_emulation;
  const int w = warp_of_thread(), l = lane_of_thread();
  cta->value[w][l] = v;
  cta->warp[w]->arrive_and_wait();
  const int r = cta->value[w][src_lane];
  cta->warp[w]->arrive_and_wait();
  return r;
}

inline void __threadfence() {}  // CTAs run one after another

inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
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

namespace qed::cuda {
namespace {

using std::min;

uint4 load_16(const void* p, const testing::skinny_emulation::Range& range, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0 || !range.contains(p, 16)) {
    testing::skinny_emulation::fail_access(what, p);
  }
  uint4 v;
  std::memcpy(&v, p, 16);
  return v;
}

uint4 load_weight(const char* p) {
  return load_16(p, testing::skinny_emulation::cta->weights, "weight load outside the weight");
}

uint4 load_activation(const uint4* p) {
  return load_16(p, testing::skinny_emulation::cta->activations, "activation load outside x");
}

void store_partial(float* p, float v) {
  if (!testing::skinny_emulation::cta->workspace.contains(p, 4)) {
    testing::skinny_emulation::fail_access("partial store outside the workspace", p);
  }
  *p = v;
}

float load_partial(const float* p) {
  if (!testing::skinny_emulation::cta->workspace.contains(p, 4)) {
    testing::skinny_emulation::fail_access("partial load outside the workspace", p);
  }
  return *p;
}

void e4m3x4_to_f16x4(uint32_t codes, uint32_t& lo, uint32_t& hi) {
  uint16_t h[4];
  for (int i = 0; i < 4; ++i) h[i] = float_to_f16(f8e4m3_to_float(uint8_t(codes >> (8 * i))));
  lo = uint32_t(h[0]) | (uint32_t(h[1]) << 16);
  hi = uint32_t(h[2]) | (uint32_t(h[3]) << 16);
}

// A (16×16): a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); B (16×8): b0 (2t.., g), b1 (2t+8.., g);
// C (16×8): (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
template <bool F16>
void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  using namespace testing::skinny_emulation;
  const int w = warp_of_thread(), l = lane_of_thread();
  const uint32_t a[4] = {a0, a1, a2, a3};
  for (int i = 0; i < 4; ++i) cta->a[w][l][i] = a[i];
  cta->b[w][l][0] = b0;
  cta->b[w][l][1] = b1;
  cta->warp[w]->arrive_and_wait();
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = half_of(cta->a[w][lane][0], h, F16);
      A[g + 8][2 * t + h] = half_of(cta->a[w][lane][1], h, F16);
      A[g][2 * t + 8 + h] = half_of(cta->a[w][lane][2], h, F16);
      A[g + 8][2 * t + 8 + h] = half_of(cta->a[w][lane][3], h, F16);
      B[2 * t + h][g] = half_of(cta->b[w][lane][0], h, F16);
      B[2 * t + 8 + h][g] = half_of(cta->b[w][lane][1], h, F16);
    }
  }
  cta->warp[w]->arrive_and_wait();
  const int g = l / 4, t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e / 2) * 8, col = 2 * t + e % 2;
    for (int k = 0; k < 16; ++k) c[e] += A[row][k] * B[k][col];
  }
}

}  // namespace
}  // namespace qed::cuda

#include "backend/cuda/skinny_gemm_tile.cuh"

#undef threadIdx
#undef blockIdx
#undef gridDim
#undef __shared__

namespace qed::testing {
namespace {

namespace emu = skinny_emulation;

struct Buffers {
  emu::Range weights, activations, workspace;
};

// Every CTA of the launch, one after another, each as 256 threads; `grid` CTAs (0: one per unit) loop over the units.
template <class F, int MT, int NT>
void emulate_launch(cuda::Params p, int splits, int grid, const Buffers& buffers) {
  p.columns = cuda::ctas_along_out(p.out, MT);
  p.splits = splits;
  auto state = std::make_unique<emu::Cta>();
  state->weights = buffers.weights;
  state->activations = buffers.activations;
  state->workspace = buffers.workspace;
  emu::cta = state.get();
  emu::grid_dim = {unsigned(grid > 0 ? grid : p.columns * splits), 1, 1};
  for (unsigned y = 0; y < emu::grid_dim.y; ++y) {
    for (unsigned x = 0; x < emu::grid_dim.x; ++x) {
      std::barrier<> all(cuda::kThreads);
      std::vector<std::unique_ptr<std::barrier<>>> warps;
      for (int w = 0; w < cuda::kWarps; ++w) {
        warps.push_back(std::make_unique<std::barrier<>>(32));
        state->warp[w] = warps.back().get();
      }
      state->all = &all;
      std::vector<std::thread> threads;
      for (int t = 0; t < cuda::kThreads; ++t) {
        threads.emplace_back([&, t] {
          emu::thread_index = {unsigned(t), 0, 0};
          emu::block_index = {x, y, 0};
          cuda::skinny_gemm_kernel<F, MT, NT>(p);
        });
      }
      for (std::thread& thread : threads) thread.join();
    }
  }
  emu::cta = nullptr;
}

template <class F>
void emulate(const cuda::Params& p, int tiles, int splits, int grid, const Buffers& buffers) {
  const bool two = p.rows > 8;
  switch (tiles) {
    case 1:
      two ? emulate_launch<F, 1, 2>(p, splits, grid, buffers) : emulate_launch<F, 1, 1>(p, splits, grid, buffers);
      break;
    case 2:
      two ? emulate_launch<F, 2, 2>(p, splits, grid, buffers) : emulate_launch<F, 2, 1>(p, splits, grid, buffers);
      break;
    default:
      two ? emulate_launch<F, 4, 2>(p, splits, grid, buffers) : emulate_launch<F, 4, 1>(p, splits, grid, buffers);
      break;
  }
}

enum class Format { Bf16, Fp8PerTensor, Fp8PerChannel, Int8 };

struct Case {
  Format format;
  int rows, in, out, tiles, splits;
  bool bias;
  int grid = 0;  // CTAs looping over the units (persistent); 0: one per unit
};

std::string describe(const Case& c) {
  static const char* names[] = {"bf16", "fp8 per-tensor", "fp8 per-channel", "int8"};
  return std::string(names[int(c.format)]) + " rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) +
         " out " + std::to_string(c.out) + " tiles " + std::to_string(c.tiles) + " splits " + std::to_string(c.splits) +
         " grid " + std::to_string(c.grid) + (c.bias ? " +bias" : "");
}

std::vector<float> random_values(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_float(float_to_bf16(dist(rng)));
  return v;
}

void check(const Case& c, std::mt19937& rng) {
  const std::string what = describe(c);
  const size_t in = size_t(c.in), out = size_t(c.out), rows = size_t(c.rows);
  std::vector<float> x = random_values(rows * in, rng, 1.0f), w = random_values(out * in, rng, 0.05f);
  for (size_t j = 0; j < out; ++j) {
    // Per-channel scales differ; rounded again so the bf16 kernel reads the reference's weights.
    for (size_t k = 0; k < in; ++k) w[j * in + k] = bf16_to_float(float_to_bf16(w[j * in + k] * float(1 + j % 7)));
  }
  const std::vector<float> bias = random_values(out, rng, 0.5f);
  // What the kernel reads (16-byte aligned vectors) and the reference's result and magnitude M = max Σ|x·w|·scale.
  std::vector<uint16_t> x_bf16(rows * in), w_bf16, bias_bf16(out);
  std::vector<uint8_t> x_q, w_q8;
  std::vector<int8_t> w_i8;
  std::vector<float> w_scales, want(rows * out), x_used = x, w_used(out * in), row_scale(out, 1.0f);
  float x_scale = 1.0f;
  for (size_t i = 0; i < x.size(); ++i) x_bf16[i] = float_to_bf16(x[i]);
  for (size_t j = 0; j < out; ++j) bias_bf16[j] = float_to_bf16(bias[j]);
  const float* bias_ref = c.bias ? bias.data() : nullptr;
  switch (c.format) {
    case Format::Bf16:
      w_bf16.resize(w.size());
      for (size_t i = 0; i < w.size(); ++i) w_bf16[i] = float_to_bf16(w[i]);
      cpu::matmul(x.data(), w.data(), bias_ref, want.data(), c.rows, c.in, c.out, nullptr);
      w_used = w;
      break;
    case Format::Fp8PerTensor:
    case Format::Fp8PerChannel: {
      const bool per_channel = c.format == Format::Fp8PerChannel;
      w_q8.resize(w.size());
      if (per_channel) {
        for (size_t j = 0; j < out; ++j) w_scales.push_back(cpu::fp8_scale_for_amax(cpu::amax(&w[j * in], in)));
        cpu::quantize_fp8_per_channel(w.data(), c.out, c.in, w_scales.data(), w_q8.data());
      } else {
        w_scales.push_back(cpu::fp8_scale_for_amax(cpu::amax(w.data(), w.size())));
        cpu::quantize_fp8_per_tensor(w.data(), w.size(), w_scales[0], w_q8.data());
      }
      x_scale = 0.8f * cpu::fp8_scale_for_amax(cpu::amax(x.data(), x.size()));
      x_q.resize(x.size());
      cpu::quantize_fp8_per_tensor(x.data(), x.size(), x_scale, x_q.data());
      cpu::fp8_gemm(x_q.data(), x_scale, w_q8.data(), w_scales.data(), per_channel, bias_ref, want.data(), c.rows, c.in,
                    c.out);
      for (size_t i = 0; i < x.size(); ++i) x_used[i] = f8e4m3_to_float(x_q[i]);
      for (size_t i = 0; i < w.size(); ++i) w_used[i] = f8e4m3_to_float(w_q8[i]);
      for (size_t j = 0; j < out; ++j) row_scale[j] = x_scale * w_scales[per_channel ? j : 0];
      break;
    }
    case Format::Int8:
      w_i8.resize(w.size());
      w_scales.resize(out);
      cpu::quantize_int8_per_channel(w.data(), c.out, c.in, w_scales.data(), w_i8.data());
      cpu::int8_wo_gemm(x.data(), w_i8.data(), w_scales.data(), bias_ref, want.data(), c.rows, c.in, c.out);
      for (size_t i = 0; i < w.size(); ++i) w_used[i] = float(w_i8[i]);
      row_scale = w_scales;
      break;
  }
  float magnitude = 0.0f;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t j = 0; j < out; ++j) {
      float sum = 0.0f;
      for (size_t k = 0; k < in; ++k) sum += std::fabs(x_used[r * in + k] * w_used[j * in + k]);
      magnitude = std::max(magnitude, sum * row_scale[j]);
    }
  }

  // Aligned copies the kernel reads, sized exactly (the range checks catch any read past them).
  const bool fp8 = c.format == Format::Fp8PerTensor || c.format == Format::Fp8PerChannel;
  const size_t x_bytes = fp8 ? x_q.size() : x_bf16.size() * 2;
  const size_t w_bytes = c.format == Format::Bf16 ? w_bf16.size() * 2 : w.size();
  std::vector<uint4> x_mem((x_bytes + 15) / 16), w_mem((w_bytes + 15) / 16);
  std::memcpy(x_mem.data(), fp8 ? static_cast<const void*>(x_q.data()) : x_bf16.data(), x_bytes);
  std::memcpy(w_mem.data(),
              c.format == Format::Bf16 ? static_cast<const void*>(w_bf16.data())
              : fp8                    ? static_cast<const void*>(w_q8.data())
                                       : static_cast<const void*>(w_i8.data()),
              w_bytes);
  std::vector<uint16_t> y(rows * out + out, 0x7FC1);  // one poisoned row past the result
  const int ctas = cuda::ctas_along_out(c.out, c.tiles);
  std::vector<float> workspace(size_t(c.splits) * ctas * c.tiles * (c.rows > 8 ? 2 : 1) * 128, NAN);
  std::vector<unsigned> counters(size_t(ctas), 0u);
  const float x_scale_value = x_scale;
  const cuda::Params p{reinterpret_cast<const char*>(x_mem.data()),
                       reinterpret_cast<const char*>(w_mem.data()),
                       fp8 ? &x_scale_value : nullptr,
                       c.format == Format::Bf16 ? nullptr : w_scales.data(),
                       c.bias ? reinterpret_cast<const __nv_bfloat16*>(bias_bf16.data()) : nullptr,
                       y.data(),
                       c.format == Format::Int8 || c.format == Format::Fp8PerChannel,
                       false,
                       c.rows,
                       c.out,
                       c.in,
                       c.splits > 1 ? workspace.data() : nullptr,
                       c.splits > 1 ? counters.data() : nullptr,
                       0,
                       0};
  const Buffers buffers{{w_mem.data(), w_bytes}, {x_mem.data(), x_bytes}, {workspace.data(), workspace.size() * 4}};
  switch (c.format) {
    case Format::Bf16:
      emulate<cuda::Bf16Format>(p, c.tiles, c.splits, c.grid, buffers);
      break;
    case Format::Fp8PerTensor:
    case Format::Fp8PerChannel:
      emulate<cuda::Fp8Format>(p, c.tiles, c.splits, c.grid, buffers);
      break;
    case Format::Int8:
      emulate<cuda::Int8Format>(p, c.tiles, c.splits, c.grid, buffers);
      break;
  }
  const float tolerance_scale = fp8 ? 4e-4f : 1e-5f;  // as skinny_gemm_test.cpp
  for (size_t i = 0; i < want.size(); ++i) {
    const float got = bf16_to_float(y[i]);
    const float tolerance = std::fabs(want[i]) / 256.0f + tolerance_scale * magnitude + 1e-6f;
    if (!(std::fabs(got - want[i]) <= tolerance)) {
      ADD_FAILURE() << what << ": element " << i << " (row " << i / out << ", feature " << i % out << ") got " << got
                    << " want " << want[i] << " (tolerance " << tolerance << ")";
      return;
    }
  }
  for (size_t i = want.size(); i < y.size(); ++i) {
    EXPECT_EQ(y[i], 0x7FC1) << what << ": wrote past the last row at " << i;
  }
  for (size_t i = 0; i < counters.size(); ++i) EXPECT_EQ(counters[i], 0u) << what << ": counter " << i << " left armed";
}

// in = 528 (66 bf16 / 33 int8-E4M3 vectors: a partial step and a partial group), out = 40 (partial CTAs at every
// tiling), rows on both sides of the n8 tiles, splits none and 3 (uneven K ranges); in = 16: one vector per row.
TEST(SkinnyGemmEmulation, EveryFormatMatchesItsCpuReference) {
  std::mt19937 rng(81);
  for (Format format : {Format::Bf16, Format::Fp8PerTensor, Format::Fp8PerChannel, Format::Int8}) {
    int n = 0;
    for (int rows : {1, 7, 9, 16}) {
      const int tiles = 1 << (n % 3), splits = n % 2 == 0 ? 1 : 3;
      check({format, rows, 528, 40, tiles, splits, rows % 2 == 1}, rng);
      ++n;
    }
    check({format, 3, 16, 24, 2, 2, true}, rng);
    // Persistent grids: fewer CTAs than units, each CTA taking several (of different columns and splits).
    check({format, 12, 528, 72, 1, 3, true, 4}, rng);
    check({format, 2, 528, 40, 1, 1, false, 2}, rng);
  }
}

}  // namespace
}  // namespace qed::testing
