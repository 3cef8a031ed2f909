#pragma once
// The decode GEMV kernel itself (decode_gemv.h), written against primitives the including file defines first, in
// qed::cuda's unnamed namespace: load_weight_vector (16 bytes, streamed), load_x_vector (16 bytes, cached),
// f16x2_to_float2, e4m3x4_to_f16x2_cvt with fp8_cvt_scale_fix(), pdl_wait / pdl_trigger, fp8_convert.cuh's
// e4m3x4_to_f16x2_times_2m8 and quantize_e4m3. decode_gemv.cuh defines them for the device, and
// tests/backend_cuda/decode_gemv_emulation_test.cpp as host emulations, so the CPU build runs this very code.
// Unnamed namespace: each includer gets its own copy.
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/silu_mul.cuh"

namespace qed::cuda {
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
  // > 0: W is gate_up (out = 2 · glu_inter: the gate rows, then the up rows) and y[r][n] = silu(gate) · up
  // (rows × glu_inter bf16), each product rounded to bf16 first as silu_and_mul_bf16 reads them; y_fp8 (optional)
  // also gets y's E4M3 codes / *y_fp8_scale (a static-scale FP8 down_proj's input).
  int glu_inter = 0;
  uint8_t* y_fp8 = nullptr;
  const float* y_fp8_scale = nullptr;
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
    const float2 a = f16x2_to_float2(lo), b = f16x2_to_float2(hi);
    out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
  }
  __device__ static void activation(const uint4 (&v)[kXVectors], int q, float (&out)[kPerWord]) {
    weight(word_of(v[0], q), out);
  }
  __device__ static float scale_fix() { return 65536.0f; }
};

// E4M3 by the includer's e4m3x4_to_f16x2_cvt (sm_89+: the conversion instruction, exact: every E4M3 value is an
// f16; below sm_89 the bit path), off by fp8_cvt_scale_fix().
struct Fp8CvtGemv {
  static constexpr int kElems = 16, kWeightBytes = 1, kXBytes = 1, kXVectors = 1, kPerWord = 4;
  __device__ static void weight(uint32_t word, float (&out)[kPerWord]) {
    uint32_t lo, hi;
    e4m3x4_to_f16x2_cvt(word, lo, hi);
    const float2 a = f16x2_to_float2(lo), b = f16x2_to_float2(hi);
    out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
  }
  __device__ static void activation(const uint4 (&v)[kXVectors], int q, float (&out)[kPerWord]) {
    weight(word_of(v[0], q), out);
  }
  __device__ static float scale_fix() { return fp8_cvt_scale_fix(); }
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
// reduction (shuffles, then the warps through shared memory): deterministic. With glu_inter (even FEATURES only) a
// CTA takes FEATURES / 2 consecutive gate rows and the up rows of the same features: a feature's sum is the same
// whichever row it shares a CTA with, so the fused output is the unfused GEMV + silu_and_mul_bf16 bit for bit.
template <class F, int ROWS, int WARPS, int FEATURES, int UNROLL, bool PREFETCH>
__global__ void __launch_bounds__(WARPS * 32) decode_gemv_kernel(GemvParams p) {
  constexpr int kThreads = WARPS * 32;
  constexpr int kHalf = FEATURES > 1 ? FEATURES / 2 : 1;  // glu: gate rows per CTA (even FEATURES only)
  const int tid = int(threadIdx.x);
  const bool glu = FEATURES % 2 == 0 && p.glu_inter > 0;
  const int n0 = int(blockIdx.x) * (glu ? kHalf : FEATURES);
  const int vectors = p.in / F::kElems;
  const uint4* w_row[FEATURES];
#pragma unroll
  for (int f = 0; f < FEATURES; ++f) {
    // Past the last feature: a duplicate row, summed and never stored.
    const int row = glu ? (f < kHalf ? 0 : p.glu_inter) + min(n0 + f % kHalf, p.glu_inter - 1) : min(n0 + f, p.out - 1);
    w_row[f] = reinterpret_cast<const uint4*>(p.w + size_t(row) * size_t(p.in) * F::kWeightBytes);
  }
  uint4 wv[FEATURES][UNROLL];
  auto load_weights = [&](int base) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int v = base + u * kThreads;
#pragma unroll
      for (int f = 0; f < FEATURES; ++f) {
        wv[f][u] = v < vectors ? load_weight_vector(w_row[f] + v) : make_uint4(0, 0, 0, 0);
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
          for (int i = 0; i < F::kXVectors; ++i) xv[r][i] = load_x_vector(x_rows[r] + size_t(v) * F::kXVectors + i);
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
  // Output feature n (a weight row) from the partials at slot: the references' order, the dot product times the
  // product of the scales, then the bias.
  auto finish = [&](int slot, int n) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) sum += partial[w][slot];
    sum = __fmul_rn(sum, F::scale_fix());
    if (p.w_scales) {
      const float x_scale = p.x_scale ? *p.x_scale : 1.0f;
      sum = __fmul_rn(sum, __fmul_rn(x_scale, p.w_scales[p.per_channel ? n : 0]));
    }
    if (p.bias) sum = __fadd_rn(sum, __bfloat162float(p.bias[n]));
    return sum;
  };
  if (glu) {
    if (tid >= ROWS * kHalf) return;
    const int r = tid / kHalf, h = tid % kHalf, n = n0 + h;
    if (n >= p.glu_inter) return;
    const float gate = __bfloat162float(__float2bfloat16(finish(r * FEATURES + h, n)));
    const float up = __bfloat162float(__float2bfloat16(finish(r * FEATURES + kHalf + h, p.glu_inter + n)));
    const __nv_bfloat16 value = __float2bfloat16(silu_mul(gate, up));
    const size_t at = size_t(r) * size_t(p.glu_inter) + size_t(n);
    static_cast<__nv_bfloat16*>(p.y)[at] = value;
    if (p.y_fp8) p.y_fp8[at] = quantize_e4m3(__bfloat162float(value), *p.y_fp8_scale);
    return;
  }
  if (tid >= ROWS * FEATURES) return;
  const int r = tid / FEATURES, n = n0 + tid % FEATURES;
  if (n >= p.out) return;
  const float sum = finish(tid, n);
  const size_t at = size_t(r) * size_t(p.out) + size_t(n);
  if (p.f32_out) {
    static_cast<float*>(p.y)[at] = sum;
  } else {
    static_cast<__nv_bfloat16*>(p.y)[at] = __float2bfloat16(sum);
  }
}

}  // namespace
}  // namespace qed::cuda
