#include <cuda_bf16.h>

#include <algorithm>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_kernels.h"

namespace qed::cuda {
namespace {

// One mma.sync.m16n8k16, fp32 accumulate, on bf16 (sm_80+) or f16 pairs. a: rows g / g+8 of the 16 weight rows,
// b: column g (PTX ISA fragment layouts; lane = 4g + t).
template <bool F16>
__device__ __forceinline__ void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
  if constexpr (F16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// Four E4M3 codes → two f16 pairs, exactly (every E4M3 value is an f16: 3 mantissa bits, exponents 2^-9..2^8), with
// the sm_89+ hardware conversion. Why not the FP8 MMA (m16n8k32 e4m3): Hopper has none in mma.sync; ptxas emulates
// it by converting both operands to f16 on every MMA (NVIDIA/cutlass#1986), where converting here does each weight
// once and each activation once per weight tile row.
__device__ __forceinline__ void e4m3x4_to_f16x4(uint32_t codes, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(lo) : "h"(uint16_t(codes & 0xFFFFu)));
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(hi) : "h"(uint16_t(codes >> 16)));
#else
  (void)codes, (void)lo, (void)hi;
  __trap();  // never launched: FP8 checkpoints are refused below sm_89 at load, Gemm checks the device
#endif
}

__device__ __forceinline__ uint4 load_weight(const char* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));  // streamed once: keep L1 for the activations
}

__device__ __forceinline__ uint4 load_activation(const uint4* p) {
  return __ldg(p);
}

// Split-K partials bypass L1: the last CTA of a column reads what other SMs wrote.
__device__ __forceinline__ void store_partial(float* p, float v) {
  __stcg(p, v);
}
__device__ __forceinline__ float load_partial(const float* p) {
  return __ldcg(p);
}

}  // namespace
}  // namespace qed::cuda

#include "backend/cuda/skinny_gemm_tile.cuh"

namespace qed::cuda {
namespace {

// Grid: one CTA per unit, or (persistent) no more than fit on the device at once. The occupancy of an instantiation
// is a property of the compiled kernel: asked once.
template <class F, int MT, int NT>
void launch(Params p, int splits, int persistent_sms, cudaStream_t stream) {
  p.columns = ctas_along_out(p.out, MT);
  p.splits = splits;
  int grid = p.columns * splits;
  if (persistent_sms > 0) {
    static const int per_sm = [] {
      int blocks = 0;
      QED_CUDA_CHECK(
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, skinny_gemm_kernel<F, MT, NT>, kThreads, 0));
      return std::max(blocks, 1);
    }();
    grid = std::min(grid, per_sm * persistent_sms);
  }
  skinny_gemm_kernel<F, MT, NT><<<unsigned(grid), kThreads, 0, stream>>>(p);
  QED_CUDA_CHECK_LAUNCH();
}

template <class F, int MT>
void launch_rows(const Params& p, int splits, int persistent_sms, cudaStream_t stream) {
  if (p.rows <= 8) {
    launch<F, MT, 1>(p, splits, persistent_sms, stream);
  } else {
    launch<F, MT, 2>(p, splits, persistent_sms, stream);
  }
}

template <class F>
void launch_format(const Params& p, int tiles, int splits, int persistent_sms, cudaStream_t stream) {
  switch (tiles) {
    case 1:
      launch_rows<F, 1>(p, splits, persistent_sms, stream);
      break;
    case 2:
      launch_rows<F, 2>(p, splits, persistent_sms, stream);
      break;
    default:
      launch_rows<F, 4>(p, splits, persistent_sms, stream);
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

int skinny_gemm_default_splits(SkinnyWeight type, int out, int in, int tiles, int multiprocessors, bool persistent) {
  // Up to 4 units per SM (one CTA each), or 12 on a persistent grid (2–3 resident CTAs per SM taking 4–6 units
  // each, so the last round is at most a fifth of the work), while every warp of a split keeps at least two groups
  // of loads.
  const int ctas = ctas_along_out(out, tiles), groups = k_groups(type, in, tiles);
  const int target = (persistent ? 12 : 4) * multiprocessors;
  int splits = 1;
  while (splits < 8 && ctas * splits < target && groups / (2 * splits) >= 2 * kWarps) splits *= 2;
  return splits;
}

size_t skinny_gemm_workspace_bytes(int rows, int out, int tiles, int splits) {
  const int n_tiles = rows <= 8 ? 1 : 2;
  return splits <= 1
             ? 0
             : size_t(splits) * size_t(ctas_along_out(out, tiles)) * size_t(tiles * n_tiles * 128) * sizeof(float);
}

void require_decode_gemm_operands(const DecodeGemmOperands& o, const char* kernel) {
  QED_KERNEL_REQUIRE(reinterpret_cast<uintptr_t>(o.x) % 16 == 0 && reinterpret_cast<uintptr_t>(o.w) % 16 == 0,
                     (std::string(kernel) + ": x and w must be 16-byte aligned").c_str());
  QED_KERNEL_REQUIRE(o.type == SkinnyWeight::Bf16 || o.w_scales,
                     (std::string(kernel) + ": quantized weights need their scales").c_str());
}

void skinny_gemm(const SkinnyGemm& g, cudaStream_t stream) {
  QED_KERNEL_REQUIRE(skinny_gemm_supports(g.type, g.rows, g.in, g.out),
                     "skinny_gemm: rows must be 1..16, out positive and in a positive multiple of one 16-byte vector");
  require_decode_gemm_operands(g, "skinny_gemm");
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
    splits = skinny_gemm_default_splits(g.type, g.out, g.in, tiles, g.multiprocessors, g.persistent);
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
                 g.counters,
                 0,
                 0};
  const int persistent_sms = g.persistent ? std::max(g.multiprocessors, 1) : 0;
  switch (g.type) {
    case SkinnyWeight::Bf16:
      launch_format<Bf16Format>(p, tiles, splits, persistent_sms, stream);
      break;
    case SkinnyWeight::Fp8E4m3:
      launch_format<Fp8Format>(p, tiles, splits, persistent_sms, stream);
      break;
    case SkinnyWeight::Int8:
      launch_format<Int8Format>(p, tiles, splits, persistent_sms, stream);
      break;
  }
}

}  // namespace qed::cuda
