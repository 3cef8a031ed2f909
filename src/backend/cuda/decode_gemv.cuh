#pragma once
// The decode GEMV kernel (decode_gemv.h) and its launcher, included by one .cu per weight format
// (decode_gemv_{bf16,fp8,int8}.cu) so the ~100 instantiations compile in parallel. Device code.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "backend/cuda/decode_gemv.h"
#include "backend/cuda/fp8_convert.cuh"
#include "backend/cuda/pdl.cuh"

namespace qed::cuda {

// The per-format entry points decode_gemv() dispatches to (one per .cu).
namespace gemv_detail {
void launch_bf16(const DecodeGemv& g, cudaStream_t stream);
void launch_fp8_cvt(const DecodeGemv& g, cudaStream_t stream);
void launch_fp8_bits(const DecodeGemv& g, cudaStream_t stream);
void launch_int8(const DecodeGemv& g, cudaStream_t stream);
}  // namespace gemv_detail

namespace {

struct GemvParams {
  const char* x;
  const char* w;
  const float* x_scale;
  const float* w_scales;  // null for bf16
  const __nv_bfloat16* bias;
  void* y;
  bool per_channel, f32_out;
  int out, in;
};

__device__ __forceinline__ uint32_t word_of(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;  // q is a constant after unrolling
}

// Per weight format: elements per 16-byte weight vector (kElems), bytes per weight / activation element, 16-byte
// activation vectors per weight vector (kXVectors), elements per 32-bit weight word (kPerWord), the conversion of
// weight word q and of the activations of the same k to fp32 (elements in memory order, so products pair by k), and
// the power of two the dot product is off by (scale_fix, folded into the epilogue).
struct Bf16Gemv {
  static constexpr int kElems = 8, kWeightBytes = 2, kXBytes = 2, kXVectors = 1, kPerWord = 2;
  __device__ static void weight(uint32_t word, float (&out)[kPerWord]) {
    out[0] = __uint_as_float(word << 16);
    out[1] = __uint_as_float(word & 0xFFFF0000u);
  }
  __device__ static void activation(const uint4 (&v)[kXVectors], int q, float (&out)[kPerWord]) {
    weight(word_of(v[0], q), out);
  }
  __device__ static float scale_fix() { return 1.0f; }
};

// E4M3 by bit operations: each code becomes code × 2^-8 as an f16 (exact, fp8_convert.cuh), so a product is off by
// 2^-16, which the epilogue multiplies back (exact: a power of two on a normal fp32).
struct Fp8BitsGemv {
  static constexpr int kElems = 16, kWeightBytes = 1, kXBytes = 1, kXVectors = 1, kPerWord = 4;
  __device__ static void weight(uint32_t word, float (&out)[kPerWord]) {
    uint32_t lo, hi;
    e4m3x4_to_f16x2_times_2m8(word, lo, hi);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&lo));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&hi));
    out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
  }
  __device__ static void activation(const uint4 (&v)[kXVectors], int q, float (&out)[kPerWord]) {
    weight(word_of(v[0], q), out);
  }
  __device__ static float scale_fix() { return 65536.0f; }
};

// E4M3 by the sm_89+ conversion instruction (exact: every E4M3 value is an f16); the bit path below sm_89.
struct Fp8CvtGemv {
  static constexpr int kElems = 16, kWeightBytes = 1, kXBytes = 1, kXVectors = 1, kPerWord = 4;
  __device__ static void weight(uint32_t word, float (&out)[kPerWord]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint32_t lo, hi;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(lo) : "h"(uint16_t(word & 0xFFFFu)));
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(hi) : "h"(uint16_t(word >> 16)));
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&lo));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&hi));
    out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
#else
    Fp8BitsGemv::weight(word, out);
#endif
  }
  __device__ static void activation(const uint4 (&v)[kXVectors], int q, float (&out)[kPerWord]) {
    weight(word_of(v[0], q), out);
  }
  __device__ static float scale_fix() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    return 1.0f;
#else
    return 65536.0f;
#endif
  }
};

// int8 → fp32 exactly with full-rate ALU work: byte s biased to s + 128 in the mantissa of 2^23, minus 2^23 + 128.
struct Int8Gemv {
  static constexpr int kElems = 16, kWeightBytes = 1, kXBytes = 2, kXVectors = 2, kPerWord = 4;
  __device__ static void weight(uint32_t word, float (&out)[kPerWord]) {
    const uint32_t biased = word ^ 0x80808080u;
    constexpr float kMagic = 8388736.0f;  // 2^23 + 128
    out[0] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7540)) - kMagic;
    out[1] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7541)) - kMagic;
    out[2] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7542)) - kMagic;
    out[3] = __uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7543)) - kMagic;
  }
  // Weight word q holds elements 4q..4q+3: bf16 words 2q, 2q + 1 of the 32 activation bytes.
  __device__ static void activation(const uint4 (&v)[kXVectors], int q, float (&out)[kPerWord]) {
    float lo[2], hi[2];
    Bf16Gemv::weight(word_of(v[q / 2], 2 * (q % 2)), lo);
    Bf16Gemv::weight(word_of(v[q / 2], 2 * (q % 2) + 1), hi);
    out[0] = lo[0], out[1] = lo[1], out[2] = hi[0], out[3] = hi[1];
  }
  __device__ static float scale_fix() { return 1.0f; }
};

// One CTA: FEATURES consecutive output features; its WARPS · 32 threads take the 16-byte vectors of K in turn
// (thread t: vectors t, t + threads, ...), UNROLL vectors per feature in one batch of loads, then a fixed-order
// reduction (shuffles, then the warps through shared memory): deterministic.
template <class F, int ROWS, int WARPS, int FEATURES, int UNROLL, bool PREFETCH>
__global__ void __launch_bounds__(WARPS * 32) decode_gemv_kernel(GemvParams p) {
  constexpr int kThreads = WARPS * 32;
  const int tid = int(threadIdx.x);
  const int n0 = int(blockIdx.x) * FEATURES;
  const int vectors = p.in / F::kElems;
  const uint4* w_row[FEATURES];
#pragma unroll
  for (int f = 0; f < FEATURES; ++f) {
    // Past the last feature: a duplicate row, summed and never stored.
    w_row[f] = reinterpret_cast<const uint4*>(p.w + size_t(min(n0 + f, p.out - 1)) * size_t(p.in) * F::kWeightBytes);
  }
  uint4 wv[FEATURES][UNROLL];
  auto load_weights = [&](int base) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int v = base + u * kThreads;
#pragma unroll
      for (int f = 0; f < FEATURES; ++f) {
        // Streamed once: keep L1 for x, which every CTA re-reads.
        wv[f][u] = v < vectors ? __ldcs(w_row[f] + v) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // The weights depend on no earlier kernel: their first batch is in flight while that kernel finishes.
  load_weights(tid);
  pdl_wait();
  pdl_trigger();

  const uint4* x_rows[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    x_rows[r] = reinterpret_cast<const uint4*>(p.x + size_t(r) * size_t(p.in) * F::kXBytes);
  }
  float acc[ROWS][FEATURES] = {};
  // The FMAs of one batch of weight vectors (wb) at vectors base, base + kThreads, ...
  auto multiply = [&](const uint4(&wb)[FEATURES][UNROLL], int base) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int v = base + u * kThreads;
      if (v < vectors) {
        uint4 xv[ROWS][F::kXVectors];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
#pragma unroll
          for (int i = 0; i < F::kXVectors; ++i) xv[r][i] = __ldg(x_rows[r] + size_t(v) * F::kXVectors + i);
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          float xf[ROWS][F::kPerWord];
#pragma unroll
          for (int r = 0; r < ROWS; ++r) F::activation(xv[r], q, xf[r]);
#pragma unroll
          for (int f = 0; f < FEATURES; ++f) {
            float wf[F::kPerWord];
            F::weight(word_of(wb[f][u], q), wf);
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
#pragma unroll
              for (int e = 0; e < F::kPerWord; ++e) acc[r][f] = fmaf(xf[r][e], wf[e], acc[r][f]);
            }
          }
        }
      }
    }
  };
  constexpr int kStride = kThreads * UNROLL;
  for (int base = tid;; base += kStride) {
    if constexpr (PREFETCH) {
      uint4 current[FEATURES][UNROLL];
#pragma unroll
      for (int f = 0; f < FEATURES; ++f) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) current[f][u] = wv[f][u];
      }
      if (base + kStride < vectors) load_weights(base + kStride);  // in flight during this batch's FMAs
      multiply(current, base);
      if (base + kStride >= vectors) break;
    } else {
      multiply(wv, base);
      if (base + kStride >= vectors) break;
      load_weights(base + kStride);
    }
  }

  __shared__ float partial[WARPS][ROWS * FEATURES];
  const int warp = tid / 32, lane = tid % 32;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
#pragma unroll
    for (int f = 0; f < FEATURES; ++f) {
      float sum = acc[r][f];
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
      if (lane == 0) partial[warp][r * FEATURES + f] = sum;
    }
  }
  __syncthreads();
  if (tid >= ROWS * FEATURES) return;
  const int r = tid / FEATURES, n = n0 + tid % FEATURES;
  if (n >= p.out) return;
  float sum = 0.0f;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) sum += partial[w][tid];
  // The references' order: the dot product times the product of the scales, then the bias.
  sum = __fmul_rn(sum, F::scale_fix());
  if (p.w_scales) {
    const float x_scale = p.x_scale ? *p.x_scale : 1.0f;
    sum = __fmul_rn(sum, __fmul_rn(x_scale, p.w_scales[p.per_channel ? n : 0]));
  }
  if (p.bias) sum = __fadd_rn(sum, __bfloat162float(p.bias[n]));
  const size_t at = size_t(r) * size_t(p.out) + size_t(n);
  if (p.f32_out) {
    static_cast<float*>(p.y)[at] = sum;
  } else {
    static_cast<__nv_bfloat16*>(p.y)[at] = __float2bfloat16(sum);
  }
}

template <class F, int ROWS, int V>
void launch_variant(const GemvParams& p, bool pdl, cudaStream_t stream) {
  constexpr DecodeGemvVariant v = kDecodeGemvVariants[V];
  const unsigned blocks = unsigned((p.out + v.features - 1) / v.features);
  launch_kernel(decode_gemv_kernel<F, ROWS, v.warps, v.features, v.unroll, v.prefetch>, dim3(blocks),
                dim3(v.warps * 32), 0, stream, pdl, p);
}

template <class F, int ROWS, int... V>
void launch_rows(const GemvParams& p, int variant, bool pdl, cudaStream_t stream, std::integer_sequence<int, V...>) {
  ((variant == V ? launch_variant<F, ROWS, V>(p, pdl, stream) : void()), ...);
}

// decode_gemv() has checked the arguments.
template <class F>
void launch_format(const DecodeGemv& g, cudaStream_t stream) {
  const GemvParams p{static_cast<const char*>(g.x),
                     static_cast<const char*>(g.w),
                     g.type == SkinnyWeight::Fp8E4m3 ? g.x_scale : nullptr,
                     g.type == SkinnyWeight::Bf16 ? nullptr : g.w_scales,
                     reinterpret_cast<const __nv_bfloat16*>(g.bias),
                     g.y,
                     g.type == SkinnyWeight::Int8 || g.per_channel,
                     g.f32_out,
                     g.out,
                     g.in};
  const auto variants = std::make_integer_sequence<int, kDecodeGemvVariantCount>{};
  switch (g.rows) {
    case 1:
      launch_rows<F, 1>(p, g.variant, g.pdl, stream, variants);
      break;
    case 2:
      launch_rows<F, 2>(p, g.variant, g.pdl, stream, variants);
      break;
    case 3:
      launch_rows<F, 3>(p, g.variant, g.pdl, stream, variants);
      break;
    default:
      launch_rows<F, 4>(p, g.variant, g.pdl, stream, variants);
      break;
  }
}

}  // namespace
}  // namespace qed::cuda
