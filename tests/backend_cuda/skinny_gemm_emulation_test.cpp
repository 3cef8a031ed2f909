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
#include "decode_gemm_test_util.h"

// ---- The emulated CUDA environment the kernel body is compiled against. ----
#include "emulated_cuda.h"

namespace qed::testing::skinny_emulation {

using emulated::lane_of_thread;
using emulated::Range;
using emulated::warp_barrier;
using emulated::warp_of_thread;

// The CTA's state beyond emulated::CtaSync: the lane slots of the int shuffle and the buffers it may access.
struct Cta {
  int value[8][32] = {};
  Range weights, activations, workspace;
};
inline Cta* cta = nullptr;

using emulated::fail_access;

inline float half_of(uint32_t reg, int high, bool f16) {
  const uint16_t bits = uint16_t(high ? reg >> 16 : reg & 0xFFFFu);
  return f16 ? f16_to_float(bits) : bf16_to_float(bits);
}

}  // namespace qed::testing::skinny_emulation

inline int __shfl_sync(unsigned, int v, int src_lane) {
  using namespace qed::testing::skinny_emulation;
  const int w = warp_of_thread(), l = lane_of_thread();
  cta->value[w][l] = v;
  warp_barrier();
  const int r = cta->value[w][src_lane];
  warp_barrier();
  return r;
}

inline void __threadfence() {}  // CTAs run one after another

inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}

namespace qed::cuda {
namespace {

using std::min;

uint4 load_weight(const char* p) {
  return testing::emulated::checked_load_16(p, testing::skinny_emulation::cta->weights,
                                            "weight load outside the weight");
}

uint4 load_activation(const uint4* p) {
  return testing::emulated::checked_load_16(p, testing::skinny_emulation::cta->activations,
                                            "activation load outside x");
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

// mma.sync.m16n8k16 on bf16 (F16 false) or f16 pairs.
template <bool F16>
void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  testing::emulated::mma_m16n8k16(c, {a0, a1, a2, a3}, b0, b1,
                                  [](uint32_t reg, int h) { return testing::skinny_emulation::half_of(reg, h, F16); });
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

namespace emu = emulated;

struct Buffers {
  emu::Range weights, activations, workspace;
};

// Every CTA of the launch, one after another, each as 256 threads; `grid` CTAs (0: one per unit) loop over the units.
template <class F, int MT, int NT>
void emulate_launch(cuda::Params p, int splits, int grid, const Buffers& buffers) {
  p.columns = cuda::ctas_along_out(p.out, MT);
  p.splits = splits;
  auto state = std::make_unique<skinny_emulation::Cta>();
  state->weights = buffers.weights;
  state->activations = buffers.activations;
  state->workspace = buffers.workspace;
  skinny_emulation::cta = state.get();
  emu::grid_dim = {unsigned(grid > 0 ? grid : p.columns * splits), 1, 1};
  for (unsigned y = 0; y < emu::grid_dim.y; ++y) {
    for (unsigned x = 0; x < emu::grid_dim.x; ++x) {
      emu::run_cta({x, y, 0}, cuda::kThreads, [&p] { cuda::skinny_gemm_kernel<F, MT, NT>(p); });
    }
  }
  skinny_emulation::cta = nullptr;
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

using Format = GemmFormat;

struct Case {
  Format format;
  int rows, in, out, tiles, splits;
  bool bias;
  int grid = 0;  // CTAs looping over the units (persistent); 0: one per unit
};

std::string describe(const Case& c) {
  return std::string(format_name(c.format)) + " rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) +
         " out " + std::to_string(c.out) + " tiles " + std::to_string(c.tiles) + " splits " + std::to_string(c.splits) +
         " grid " + std::to_string(c.grid) + (c.bias ? " +bias" : "");
}

void check(const Case& c, std::mt19937& rng) {
  const std::string what = describe(c);
  const size_t in = size_t(c.in), out = size_t(c.out), rows = size_t(c.rows);
  std::vector<float> x = random_bf16_values(rows * in, rng, 1.0f), w = random_bf16_values(out * in, rng, 0.05f);
  for (size_t j = 0; j < out; ++j) {
    // Per-channel scales differ; rounded again so the bf16 kernel reads the reference's weights.
    for (size_t k = 0; k < in; ++k) w[j * in + k] = bf16_to_float(float_to_bf16(w[j * in + k] * float(1 + j % 7)));
  }
  const std::vector<float> bias = random_bf16_values(out, rng, 0.5f);
  const std::vector<uint16_t> bias_bf16 = to_bf16(bias);
  const ReferenceGemm ref = reference_gemm(c.format, x, w, c.bias ? bias.data() : nullptr, c.rows, c.in, c.out);
  const std::vector<float>& want = ref.want;
  const bool fp8 = c.format == Format::Fp8PerTensor || c.format == Format::Fp8PerChannel;
  // Aligned copies the kernel reads, sized exactly (the range checks catch any read past them).
  const size_t x_bytes = ref.x.size(), w_bytes = ref.w.size();
  std::vector<uint4> x_mem((x_bytes + 15) / 16), w_mem((w_bytes + 15) / 16);
  std::memcpy(x_mem.data(), ref.x.data(), x_bytes);
  std::memcpy(w_mem.data(), ref.w.data(), w_bytes);
  std::vector<uint16_t> y(rows * out + out, 0x7FC1);  // one poisoned row past the result
  const int ctas = cuda::ctas_along_out(c.out, c.tiles);
  std::vector<float> workspace(size_t(c.splits) * ctas * c.tiles * (c.rows > 8 ? 2 : 1) * 128, NAN);
  std::vector<unsigned> counters(size_t(ctas), 0u);
  const cuda::Params p{reinterpret_cast<const char*>(x_mem.data()),
                       reinterpret_cast<const char*>(w_mem.data()),
                       fp8 ? &ref.x_scale : nullptr,
                       c.format == Format::Bf16 ? nullptr : ref.w_scales.data(),
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
  std::vector<float> got(want.size());
  for (size_t i = 0; i < want.size(); ++i) got[i] = bf16_to_float(y[i]);
  const float sum_tolerance = fp8 ? kFp8MmaTolerance : kFp32SumTolerance;  // as skinny_gemm_test.cpp
  EXPECT_TRUE(
      all_close(got, want, kBf16HalfUlp, sum_tolerance * ref.magnitude + 1e-6f, what + " (element = row * out + j)"));
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
