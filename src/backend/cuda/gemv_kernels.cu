#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_kernels.h"

namespace qed::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// 16-byte weight loads each lane has in flight per group of steps: 8 × 16 B × 256 threads = 32 KiB a CTA, with 2–3
// CTAs per SM about twice the ~36 KB an SM must keep in flight to pull its share of 4.8 TB/s at ~1 µs latency.
constexpr int kWeightLoadsInFlight = 8;

// One mma.sync.m16n8k16, bf16 in, fp32 accumulate (sm_80+). a: rows g / g+8 of the 16 weight rows, b: column g.
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One mma.sync.m16n8k32 on E4M3 codes, fp32 accumulate (sm_89+; the launcher is never reached below that: FP8
// checkpoints are refused on sm_80 at load).
__device__ __forceinline__ void mma_e4m3(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  (void)c, (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1;
  __trap();
#endif
}

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
// per step, and the MMAs of one step: lane (g, t) holds 16 bytes of weight rows g and g+8 (lo, hi) and of
// activation row g at the same k; the MMA's k slots of lane t are filled with those elements in order, for both
// operands, so every product pairs a weight with the activation of its k.
struct Bf16Format {
  static constexpr int kElems = 8, kWeightBytes = 2, kXBytes = 2, kXVectors = 1;
  __device__ static void step(float (&c)[4], const uint4& lo, const uint4& hi, const uint4 (&x)[1]) {
    mma_bf16(c, lo.x, hi.x, lo.y, hi.y, x[0].x, x[0].y);
    mma_bf16(c, lo.z, hi.z, lo.w, hi.w, x[0].z, x[0].w);
  }
};

struct Fp8Format {
  static constexpr int kElems = 16, kWeightBytes = 1, kXBytes = 1, kXVectors = 1;
  __device__ static void step(float (&c)[4], const uint4& lo, const uint4& hi, const uint4 (&x)[1]) {
    // A fresh fp32 partial per 64 k, added to the running sum in plain fp32: Hopper's FP8 MMAs may keep fewer bits
    // of the running accumulator than fp32 (DeepSeek-V3 report 3.3.2, cuBLASLt promotes too), so none of our
    // sums grows long inside the tensor core.
    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_e4m3(part, lo.x, hi.x, lo.y, hi.y, x[0].x, x[0].y);
    mma_e4m3(part, lo.z, hi.z, lo.w, hi.w, x[0].z, x[0].w);
#pragma unroll
    for (int i = 0; i < 4; ++i) c[i] += part[i];
  }
};

struct Int8Format {
  static constexpr int kElems = 16, kWeightBytes = 1, kXBytes = 2, kXVectors = 2;
  __device__ static void step(float (&c)[4], const uint4& lo, const uint4& hi, const uint4 (&x)[2]) {
    uint32_t wl[8], wh[8];
    int8x4_to_bf16x4(lo.x, wl[0], wl[1]);
    int8x4_to_bf16x4(lo.y, wl[2], wl[3]);
    int8x4_to_bf16x4(lo.z, wl[4], wl[5]);
    int8x4_to_bf16x4(lo.w, wl[6], wl[7]);
    int8x4_to_bf16x4(hi.x, wh[0], wh[1]);
    int8x4_to_bf16x4(hi.y, wh[2], wh[3]);
    int8x4_to_bf16x4(hi.z, wh[4], wh[5]);
    int8x4_to_bf16x4(hi.w, wh[6], wh[7]);
    const uint32_t xs[8] = {x[0].x, x[0].y, x[0].z, x[0].w, x[1].x, x[1].y, x[1].z, x[1].w};
#pragma unroll
    for (int q = 0; q < 4; ++q)
      mma_bf16(c, wl[2 * q], wh[2 * q], wl[2 * q + 1], wh[2 * q + 1], xs[2 * q], xs[2 * q + 1]);
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
  float* workspace;    // splits > 1: [splits][CTAs along out][MT·NT·128] fp32 partial tiles
  unsigned* counters;  // splits > 1: one per CTA along out, zero before and after the launch
};

__device__ __forceinline__ uint4 load_weight(const char* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));  // streamed once: keep L1 for the activations
}

// MT m16 weight tiles per warp, NT n8 activation tiles (rows ≤ 8 or ≤ 16). CTA: 16·MT output features, its 8 warps
// take interleaved groups of U k-steps (a step is 4 lanes × one 16-byte vector per row), then sum in shared memory.
template <class F, int MT, int NT>
__global__ void __launch_bounds__(kThreads) skinny_gemm_kernel(Params p) {
  constexpr int kStep = 4 * F::kElems;  // k per step
  constexpr int U = kWeightLoadsInFlight / (2 * MT);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int feature0 = blockIdx.x * 16 * MT;

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
  bool x_valid[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int row = 8 * j + g;
    x_valid[j] = row < p.rows;
    x_row[j] = p.x + size_t(x_valid[j] ? row : 0) * size_t(p.in) * F::kXBytes;
  }

  float acc[MT][NT][4] = {};
  const int steps = (p.in + kStep - 1) / kStep;
  const int groups = (steps + U - 1) / U;
  // Split-K over gridDim.y CTAs: contiguous ranges of groups.
  const int split = blockIdx.y, splits = gridDim.y;
  const int group_end = int((long long)groups * (split + 1) / splits);
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int group = int((long long)groups * split / splits) + warp; group < group_end; group += kWarps) {
    uint4 wv[U][MT][2];
    uint4 xv[U][NT][F::kXVectors];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = (group * U + u) * kStep + t * F::kElems;
      const bool in_range = k < p.in;  // in is a multiple of kElems: a vector is wholly inside or outside
#pragma unroll
      for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h)
          wv[u][i][h] = in_range ? load_weight(w_row[i][h] + size_t(k) * F::kWeightBytes) : zero;
      }
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint4* xp = reinterpret_cast<const uint4*>(x_row[j] + size_t(k) * F::kXBytes);
#pragma unroll
        for (int v = 0; v < F::kXVectors; ++v) xv[u][j][v] = in_range && x_valid[j] ? __ldg(xp + v) : zero;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int j = 0; j < NT; ++j) F::step(acc[i][j], wv[u][i][0], wv[u][i][1], xv[u][j]);
      }
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
    float* mine = p.workspace + (size_t(split) * gridDim.x + blockIdx.x) * kTile;
#pragma unroll
    for (int e = 0; e < (kTile + kThreads - 1) / kThreads; ++e) {
      const int idx = threadIdx.x + e * kThreads;
      if (idx < kTile) __stcg(mine + idx, sums[e]);
    }
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    if (threadIdx.x == 0) last = atomicAdd(p.counters + blockIdx.x, 1u) == unsigned(splits - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
#pragma unroll
    for (int e = 0; e < (kTile + kThreads - 1) / kThreads; ++e) {
      const int idx = threadIdx.x + e * kThreads;
      sums[e] = 0.0f;
      if (idx < kTile) {
        for (int s = 0; s < splits; ++s)
          sums[e] += __ldcg(p.workspace + (size_t(s) * gridDim.x + blockIdx.x) * kTile + idx);
      }
    }
    if (threadIdx.x == 0) p.counters[blockIdx.x] = 0;
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

template <class F, int MT, int NT>
void launch(const Params& p, int splits, cudaStream_t stream) {
  const dim3 grid(unsigned(ctas_along_out(p.out, MT)), unsigned(splits));
  skinny_gemm_kernel<F, MT, NT><<<grid, kThreads, 0, stream>>>(p);
  QED_CUDA_CHECK_LAUNCH();
}

template <class F, int MT>
void launch_rows(const Params& p, int splits, cudaStream_t stream) {
  if (p.rows <= 8) {
    launch<F, MT, 1>(p, splits, stream);
  } else {
    launch<F, MT, 2>(p, splits, stream);
  }
}

template <class F>
void launch_format(const Params& p, int tiles, int splits, cudaStream_t stream) {
  switch (tiles) {
    case 1:
      launch_rows<F, 1>(p, splits, stream);
      break;
    case 2:
      launch_rows<F, 2>(p, splits, stream);
      break;
    default:
      launch_rows<F, 4>(p, splits, stream);
      break;
  }
}

int elements_per_vector(SkinnyWeight type) {
  return type == SkinnyWeight::Bf16 ? Bf16Format::kElems : Fp8Format::kElems;
}

// Groups of 16-byte steps along K (the unit the warps and the splits share out).
int k_groups(SkinnyWeight type, int in, int tiles) {
  const int step = 4 * elements_per_vector(type);
  const int per_group = kWeightLoadsInFlight / (2 * tiles);
  return ((in + step - 1) / step + per_group - 1) / per_group;
}

}  // namespace

bool skinny_gemm_supports(SkinnyWeight type, int rows, int in, int out) {
  return rows >= 1 && rows <= kSkinnyMaxRows && out > 0 && in > 0 && in % elements_per_vector(type) == 0;
}

int skinny_gemm_default_tiles(int out) {
  // Enough CTAs to fill an H200 (132 SMs) at least twice over before a warp takes more weight tiles.
  if (out >= 16 * 4 * 264) return 4;
  if (out >= 16 * 2 * 264) return 2;
  return 1;
}

int skinny_gemm_default_splits(SkinnyWeight type, int out, int in, int tiles, int multiprocessors) {
  // Up to 4 CTAs per SM, while every warp of a split keeps at least two groups of loads.
  const int ctas = ctas_along_out(out, tiles), groups = k_groups(type, in, tiles);
  int splits = 1;
  while (splits < 8 && ctas * splits < 4 * multiprocessors && groups / (2 * splits) >= 2 * kWarps) splits *= 2;
  return splits;
}

size_t skinny_gemm_workspace_bytes(int rows, int out, int tiles, int splits) {
  const int n_tiles = rows <= 8 ? 1 : 2;
  return splits <= 1
             ? 0
             : size_t(splits) * size_t(ctas_along_out(out, tiles)) * size_t(tiles * n_tiles * 128) * sizeof(float);
}

void skinny_gemm(const SkinnyGemm& g, cudaStream_t stream) {
  QED_KERNEL_REQUIRE(skinny_gemm_supports(g.type, g.rows, g.in, g.out),
                     "skinny_gemm: rows must be 1..16, out positive and in a positive multiple of one 16-byte vector");
  QED_KERNEL_REQUIRE(reinterpret_cast<uintptr_t>(g.x) % 16 == 0 && reinterpret_cast<uintptr_t>(g.w) % 16 == 0,
                     "skinny_gemm: x and w must be 16-byte aligned");
  QED_KERNEL_REQUIRE(g.type == SkinnyWeight::Bf16 || g.w_scales, "skinny_gemm: quantized weights need their scales");
  QED_KERNEL_REQUIRE(g.tiles_per_warp == 0 || g.tiles_per_warp == 1 || g.tiles_per_warp == 2 || g.tiles_per_warp == 4,
                     "skinny_gemm: tiles_per_warp must be 0, 1, 2 or 4");
  QED_KERNEL_REQUIRE(g.splits >= 0 && g.splits <= 64, "skinny_gemm: splits must be in 0..64");
  const int tiles = g.tiles_per_warp ? g.tiles_per_warp : skinny_gemm_default_tiles(g.out);
  auto fits = [&](int splits) {
    return splits == 1 || (g.workspace && g.counters && g.counter_count >= ctas_along_out(g.out, tiles) &&
                           g.workspace_bytes >= skinny_gemm_workspace_bytes(g.rows, g.out, tiles, splits));
  };
  int splits = g.splits;
  if (splits == 0) {
    splits = skinny_gemm_default_splits(g.type, g.out, g.in, tiles, g.multiprocessors);
    if (!fits(splits)) splits = 1;
  }
  QED_KERNEL_REQUIRE(fits(splits), "skinny_gemm: splits > 1 needs a workspace and counters large enough");
  const Params p{static_cast<const char*>(g.x),
                 static_cast<const char*>(g.w),
                 g.type == SkinnyWeight::Fp8E4m3 ? g.x_scale : nullptr,
                 g.type == SkinnyWeight::Bf16 ? nullptr : g.w_scales,
                 reinterpret_cast<const __nv_bfloat16*>(g.bias),
                 g.y,
                 g.type == SkinnyWeight::Int8 || g.per_channel,
                 g.f32_out,
                 g.rows,
                 g.out,
                 g.in,
                 g.workspace,
                 g.counters};
  switch (g.type) {
    case SkinnyWeight::Bf16:
      launch_format<Bf16Format>(p, tiles, splits, stream);
      break;
    case SkinnyWeight::Fp8E4m3:
      launch_format<Fp8Format>(p, tiles, splits, stream);
      break;
    case SkinnyWeight::Int8:
      launch_format<Int8Format>(p, tiles, splits, stream);
      break;
  }
}

}  // namespace qed::cuda
