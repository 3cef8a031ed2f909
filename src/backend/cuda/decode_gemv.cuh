#pragma once
// The decode GEMV's device primitives, its kernel (decode_gemv_tile.cuh) and its launcher, included by one .cu per
// weight format (decode_gemv_{bf16,fp8,fp8_bits,int8}.cu) so the ~150 instantiations compile in parallel.
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

// Streamed once: keep L1 for x, which every CTA re-reads.
__device__ __forceinline__ uint4 load_weight_vector(const uint4* p) {
  return __ldcs(p);
}
__device__ __forceinline__ uint4 load_x_vector(const uint4* p) {
  return __ldg(p);
}
__device__ __forceinline__ float2 f16x2_to_float2(uint32_t pair) {
  return __half22float2(*reinterpret_cast<const __half2*>(&pair));
}
__device__ __forceinline__ void e4m3x4_to_f16x2_cvt(uint32_t codes, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(lo) : "h"(uint16_t(codes & 0xFFFFu)));
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(hi) : "h"(uint16_t(codes >> 16)));
#else
  e4m3x4_to_f16x2_times_2m8(codes, lo, hi);
#endif
}
// What e4m3x4_to_f16x2_cvt's products are off by.
__device__ __forceinline__ float fp8_cvt_scale_fix() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  return 1.0f;
#else
  return 65536.0f;
#endif
}

}  // namespace
}  // namespace qed::cuda

#include "backend/cuda/decode_gemv_tile.cuh"

namespace qed::cuda {
namespace {

template <class F, int ROWS, int V>
void launch_variant(const GemvParams& p, bool pdl, cudaStream_t stream) {
  constexpr DecodeGemvVariant v = kDecodeGemvVariants[V];
  // With SiLU-and-mul a CTA covers features / 2 outputs (a gate and an up row each).
  const int outputs = p.glu_inter > 0 ? p.glu_inter : p.out;
  const int per_cta = p.glu_inter > 0 ? v.features / 2 : v.features;
  const unsigned blocks = unsigned((outputs + per_cta - 1) / per_cta);
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
                     g.in,
                     g.silu_mul ? g.out / 2 : 0,
                     g.y_fp8,
                     g.y_fp8_scale};
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
