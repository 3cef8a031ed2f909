#pragma once
// The skinny GEMM kernel itself (see gemv_kernels.h), written against a few primitives the including file defines
// first, in qed::cuda's unnamed namespace: mma_16816<F16> (mma.sync.m16n8k16 with fp32 accumulation on bf16 or f16
// pairs), e4m3x4_to_f16x4, load_weight (16 bytes, streamed), load_activation (16 bytes, cached), store_partial /
// load_partial (fp32 split-K partials, L2). gemv_kernels.cu defines them as PTX; tests/backend_cuda/
// skinny_gemm_emulation_test.cpp as host emulations (the PTX ISA's fragment layouts), so the CPU build runs this
// very code. Unnamed namespace: each includer gets its own copy, and the two never meet at link time.
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace qed::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// 16-byte weight loads each lane has in flight per group of steps: 8 × 16 B × 256 threads = 32 KiB a CTA, with 2–3
// CTAs per SM about twice the ~36 KB an SM must keep in flight to pull its share of 4.8 TB/s at ~1 µs latency.
constexpr int kWeightLoadsInFlight = 8;

// Four int8 codes → two bf16 pairs, exactly: each byte biased to s + 128 goes into the mantissa of 2^23 (an fp32
// whose value is 2^23 + s + 128), one subtraction gives s as an fp32, and |s| ≤ 128 has at most 8 significant bits,
// so its bf16 is the fp32's upper half (no rounding). All full-rate ALU work (no I2F).
__device__ __forceinline__ void int8x4_to_bf16x4(uint32_t codes, uint32_t& lo, uint32_t& hi) {
  const uint32_t biased = codes ^ 0x80808080u;
  constexpr float kMagic = 8388736.0f;  // 2^23 + 128
  const uint32_t f0 = __float_as_uint(__uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7540)) - kMagic);
  const uint32_t f1 = __float_as_uint(__uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7541)) - kMagic);
  const uint32_t f2 = __float_as_uint(__uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7542)) - kMagic);
  const uint32_t f3 = __float_as_uint(__uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7543)) - kMagic);
  lo = __byte_perm(f0, f1, 0x7632);  // element 0 in the low half, as a bf16 pair loaded from memory
  hi = __byte_perm(f2, f3, 0x7632);
}

// Per weight format: elements per 16-byte vector, bytes per weight / activation element, 16-byte activation vectors
// per step, and the conversion of a lane's 16 weight bytes and of its activation bytes at the same k into kRegs
// registers of 16-bit pairs (bf16, or f16 for FP8), elements in memory order. Lane (g, t) holds weight rows g and
// g + 8 and activation row g; MMA q of a step takes pairs 2q and 2q + 1 of each as its k slots 2t.., 2t+8.. (the
// same permutation of k for both operands, so every product pairs a weight with the activation of its k).
struct Bf16Format {
  static constexpr int kElems = 8, kWeightBytes = 2, kXBytes = 2, kXVectors = 1, kRegs = 4;
  static constexpr bool kF16 = false;
  __device__ static void weights(const uint4& v, uint32_t (&r)[kRegs]) {
    r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
  }
  __device__ static void activations(const uint4 (&v)[kXVectors], uint32_t (&r)[kRegs]) { weights(v[0], r); }
};

struct Fp8Format {
  static constexpr int kElems = 16, kWeightBytes = 1, kXBytes = 1, kXVectors = 1, kRegs = 8;
  static constexpr bool kF16 = true;
  __device__ static void weights(const uint4& v, uint32_t (&r)[kRegs]) {
    e4m3x4_to_f16x4(v.x, r[0], r[1]);
    e4m3x4_to_f16x4(v.y, r[2], r[3]);
    e4m3x4_to_f16x4(v.z, r[4], r[5]);
    e4m3x4_to_f16x4(v.w, r[6], r[7]);
  }
  __device__ static void activations(const uint4 (&v)[kXVectors], uint32_t (&r)[kRegs]) { weights(v[0], r); }
};

struct Int8Format {
  static constexpr int kElems = 16, kWeightBytes = 1, kXBytes = 2, kXVectors = 2, kRegs = 8;
  static constexpr bool kF16 = false;
  __device__ static void weights(const uint4& v, uint32_t (&r)[kRegs]) {
    int8x4_to_bf16x4(v.x, r[0], r[1]);
    int8x4_to_bf16x4(v.y, r[2], r[3]);
    int8x4_to_bf16x4(v.z, r[4], r[5]);
    int8x4_to_bf16x4(v.w, r[6], r[7]);
  }
  __device__ static void activations(const uint4 (&v)[kXVectors], uint32_t (&r)[kRegs]) {
    r[0] = v[0].x, r[1] = v[0].y, r[2] = v[0].z, r[3] = v[0].w;
    r[4] = v[1].x, r[5] = v[1].y, r[6] = v[1].z, r[7] = v[1].w;
  }
};

int ctas_along_out(int out, int tiles) {
  return (out + 16 * tiles - 1) / (16 * tiles);
}

struct Params {
  const char* x;
  const char* w;
  const float* x_scale;
  const float* w_scales;
  const __nv_bfloat16* bias;
  void* y;
  bool per_channel, f32_out;
  int rows, out, in;
  float* workspace;     // splits > 1: [splits][columns][MT·NT·128] fp32 partial tiles
  unsigned* counters;   // splits > 1: one per column, zero before and after the launch
  int columns, splits;  // work units: columns (16·MT features each) × splits (contiguous ranges of K)
};

// One work unit: MT m16 weight tiles per warp, NT n8 activation tiles (rows ≤ 8 or ≤ 16), i.e. the 16·MT output
// features of `column` over the K range of `split`; the CTA's 8 warps take interleaved groups of U k-steps (a step is
// 4 lanes × one 16-byte vector per row), then sum in shared memory.
template <class F, int MT, int NT>
__device__ __forceinline__ void skinny_gemm_unit(const Params& p, int column, int split) {
  constexpr int kStep = 4 * F::kElems;  // k per step
  constexpr int U = kWeightLoadsInFlight / (2 * MT);
  // The warp index through a shuffle from lane 0: ptxas then knows it is warp-uniform, so the K loop below is not
  // divergent and the mma.sync need no WARPSYNC, which it would not move loads across (the loads of a group would
  // each wait for the MMA before them: seen in the SASS).
  const int warp = __shfl_sync(0xFFFFFFFFu, int(threadIdx.x) / 32, 0);
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int feature0 = column * 16 * MT;
  const int splits = p.splits;
  __syncthreads();  // the previous unit of this CTA is done with the shared memory below

  const char* w_row[MT][2];
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // Past the last feature: a duplicate row, computed and never stored.
      const int feature = min(feature0 + 16 * i + 8 * h + g, p.out - 1);
      w_row[i][h] = p.w + size_t(feature) * size_t(p.in) * F::kWeightBytes;
    }
  }
  const char* x_row[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    // Rows past the batch read the last row again: their MMA columns are never stored.
    x_row[j] = p.x + size_t(min(8 * j + g, p.rows - 1)) * size_t(p.in) * F::kXBytes;
  }

  float acc[MT][NT][4] = {};
  const int steps = (p.in + kStep - 1) / kStep;
  const int groups = (steps + U - 1) / U;
  const int full_groups = p.in / (U * kStep);  // groups with every vector inside K
  // Split-K: contiguous ranges of groups.
  const int group_end = int((long long)groups * (split + 1) / splits);
  // One group: all its loads first, then the MMAs. CHECKED for the last, partial group: vectors past K load k = 0
  // and are zeroed after the load (a select, where a conditional load would be a divergent branch in PTX).
  auto group_mma = [&](int group, auto checked) {
    uint4 wv[U][MT][2];
    uint4 xv[U][NT][F::kXVectors];
    bool in_range[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k_step = (group * U + u) * kStep + t * F::kElems;
      // in is a multiple of kElems: a vector is wholly inside or outside
      in_range[u] = !decltype(checked)::value || k_step < p.in;
      const size_t k = in_range[u] ? size_t(k_step) : 0;
#pragma unroll
      for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) wv[u][i][h] = load_weight(w_row[i][h] + k * F::kWeightBytes);
      }
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint4* xp = reinterpret_cast<const uint4*>(x_row[j] + k * F::kXBytes);
#pragma unroll
        for (int v = 0; v < F::kXVectors; ++v) xv[u][j][v] = load_activation(xp + v);
      }
    }
    if constexpr (decltype(checked)::value) {
      const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          wv[u][i][0] = in_range[u] ? wv[u][i][0] : zero;
          wv[u][i][1] = in_range[u] ? wv[u][i][1] : zero;
        }
#pragma unroll
        for (int j = 0; j < NT; ++j) {
#pragma unroll
          for (int v = 0; v < F::kXVectors; ++v) xv[u][j][v] = in_range[u] ? xv[u][j][v] : zero;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      uint32_t xr[NT][F::kRegs];
#pragma unroll
      for (int j = 0; j < NT; ++j) F::activations(xv[u][j], xr[j]);
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        uint32_t lo[F::kRegs], hi[F::kRegs];
        F::weights(wv[u][i][0], lo);
        F::weights(wv[u][i][1], hi);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
#pragma unroll
          for (int q = 0; q < F::kRegs / 2; ++q) {
            mma_16816<F::kF16>(acc[i][j], lo[2 * q], hi[2 * q], lo[2 * q + 1], hi[2 * q + 1], xr[j][2 * q],
                               xr[j][2 * q + 1]);
          }
        }
      }
    }
  };
  for (int group = int((long long)groups * split / splits) + warp; group < group_end; group += kWarps) {
    if (group < full_groups) {
      group_mma(group, std::false_type{});
    } else {
      group_mma(group, std::true_type{});
    }
  }

  __shared__ float4 partial[kWarps][MT * NT][32];
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      partial[warp][i * NT + j][lane] = make_float4(acc[i][j][0], acc[i][j][1], acc[i][j][2], acc[i][j][3]);
    }
  }
  __syncthreads();
  constexpr int kTile = MT * NT * 32 * 4;  // fp32 outputs of the CTA, C-fragment order
  float sums[(kTile + kThreads - 1) / kThreads];
#pragma unroll
  for (int e = 0; e < (kTile + kThreads - 1) / kThreads; ++e) {
    const int idx = threadIdx.x + e * kThreads;
    sums[e] = 0.0f;
    if (idx < kTile) {
      const int c = idx % 4, l = (idx / 4) % 32, tile = idx / 128;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sums[e] += reinterpret_cast<const float*>(&partial[w][tile][l])[c];
    }
  }
  if (splits > 1) {
    // Serial split-K fixup: every CTA of a column stores its partial tile, the last to arrive (counter) adds them
    // in split order (deterministic) and runs the epilogue, then re-arms the counter for the next launch.
    float* mine = p.workspace + (size_t(split) * size_t(p.columns) + size_t(column)) * kTile;
#pragma unroll
    for (int e = 0; e < (kTile + kThreads - 1) / kThreads; ++e) {
      const int idx = threadIdx.x + e * kThreads;
      if (idx < kTile) store_partial(mine + idx, sums[e]);
    }
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    if (threadIdx.x == 0) last = atomicAdd(p.counters + column, 1u) == unsigned(splits - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
#pragma unroll
    for (int e = 0; e < (kTile + kThreads - 1) / kThreads; ++e) {
      const int idx = threadIdx.x + e * kThreads;
      sums[e] = 0.0f;
      if (idx < kTile) {
        for (int s = 0; s < splits; ++s)
          sums[e] += load_partial(p.workspace + (size_t(s) * size_t(p.columns) + size_t(column)) * kTile + idx);
      }
    }
    if (threadIdx.x == 0) p.counters[column] = 0;
  }
  const float x_scale = p.x_scale ? *p.x_scale : 1.0f;
#pragma unroll
  for (int e = 0; e < (kTile + kThreads - 1) / kThreads; ++e) {
    const int idx = threadIdx.x + e * kThreads;
    const int c = idx % 4, l = (idx / 4) % 32, tile = idx / 128;
    // The C fragment of m16n8: c0/c1 at (row g, columns 2t, 2t+1), c2/c3 at row g + 8.
    const int feature = feature0 + 16 * (tile / NT) + l / 4 + (c >= 2 ? 8 : 0);
    const int row = 8 * (tile % NT) + 2 * (l % 4) + (c & 1);
    if (idx >= kTile || feature >= p.out || row >= p.rows) continue;
    float sum = sums[e];
    // The references' order: the scales multiply each other, then the dot product; the bias last.
    if (p.w_scales) sum = __fmul_rn(sum, __fmul_rn(x_scale, p.w_scales[p.per_channel ? feature : 0]));
    if (p.bias) sum = __fadd_rn(sum, __bfloat162float(p.bias[feature]));
    const size_t at = size_t(row) * size_t(p.out) + size_t(feature);
    if (p.f32_out) {
      static_cast<float*>(p.y)[at] = sum;
    } else {
      static_cast<__nv_bfloat16*>(p.y)[at] = __float2bfloat16(sum);
    }
  }
}

// The grid walks the units column-fastest, CTA b taking units b, b + gridDim.x, ...: one unit per CTA when the grid
// has them all, several when it is sized to the CTAs resident at once (persistent: no partial last wave).
// __launch_bounds__(…, 2): with no minimum, ptxas aimed at a higher occupancy and sank each step's loads down to their
// MMAs (2–3 loads in flight per lane instead of all of a group's, seen in the SASS); with 1, the unit loop took up to
// 183 registers (1 CTA per SM); with 2, a group's loads still issue back to back in 77–128 registers, no spills.
template <class F, int MT, int NT>
__global__ void __launch_bounds__(kThreads, 2) skinny_gemm_kernel(Params p) {
  const int units = p.columns * p.splits;
  for (int unit = int(blockIdx.x); unit < units; unit += int(gridDim.x)) {
    skinny_gemm_unit<F, MT, NT>(p, unit % p.columns, unit / p.columns);
  }
}

}  // namespace
}  // namespace qed::cuda
