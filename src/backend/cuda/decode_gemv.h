#pragma once
// The memory-bound CUDA-core GEMV family for decode (1..kDecodeGemvMaxRows activation rows):
// y[r][j] = scale_j · Σ_k x[r][k] · W[j][k] (+ bias[j]), W row-major out × in (nn.Linear), fp32 products and sums,
// every weight byte read once with 16-byte streaming loads. Three weight formats with the semantics of their CPU
// references:
//   Bf16     x bf16, W bf16, no scale (cpu::matmul)
//   Fp8E4m3  x E4M3 codes, W E4M3 codes, scale = *x_scale · w_scales[per_channel ? j : 0] (cpu::fp8_gemm; every
//            e4m3 · e4m3 product is exact in fp32)
//   Int8     x bf16, W int8 codes, scale = w_scales[j] (cpu::int8_wo_gemm)
// A CTA owns `features` output features and all its warps split K between them (interleaved 16-byte vectors), so a
// layer of 5120 features makes 640-5120 CTAs (5-40 per SM on an H200) and every lane's loop is short but wholly in
// flight, instead of the bf16_gemv.h kernel's one warp per two features over all of K (320 CTAs on o_proj: 2-3 per
// SM, a ~20% tail). The variants differ in warps per CTA, features per CTA and loads in flight per lane; which one a
// layer runs is a measurement (decode_gemm_plan.h, bench/skinny_gemm).
//
// Programmatic dependent launch (pdl.cuh): the first weight loads are issued before pdl_wait(), x is read and y
// written only after it.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "backend/cuda/gemv_kernels.h"

namespace qed::cuda {

inline constexpr int kDecodeGemvMaxRows = 4;

// A compiled variant: warps per CTA, output features per CTA, 16-byte weight loads per lane and feature in one
// batch (all of a batch in flight before its FMAs), and whether the next batch is loaded before the FMAs of the
// current one (twice the load registers; keeps a lane's loads in flight across the long K of the down projection).
struct DecodeGemvVariant {
  int warps, features, unroll;
  bool prefetch = false;
};
inline constexpr DecodeGemvVariant kDecodeGemvVariants[] = {
    {4, 2, 4}, {8, 2, 4}, {4, 4, 4}, {8, 4, 2}, {4, 8, 2}, {8, 1, 8}, {2, 4, 4}, {4, 2, 4, true}, {8, 4, 2, true},
};
inline constexpr int kDecodeGemvVariantCount = int(sizeof(kDecodeGemvVariants) / sizeof(kDecodeGemvVariants[0]));
// "w4f2u4" (and "w4f2u4p" with prefetch): the bench's and the plan's name of a variant.
std::string decode_gemv_variant_name(int variant);

struct DecodeGemv : DecodeGemmOperands {
  int variant = 0;  // index into kDecodeGemvVariants
  // Fp8E4m3: decode the codes with bit operations (exact, code × 2^-8 as f16, the 2^16 folded into the scale)
  // instead of the sm_89+ cvt instruction: which is cheaper is measured. Below sm_89 the bit path is always taken.
  bool fp8_bits = false;
  bool pdl = false;  // launch with programmatic dependent launch (pdl.cuh)
  // SiLU-and-mul in the epilogue (decode_gemv_silu_supports): w is gate_up, out = 2 · inter, and y gets
  // silu(gate) · up, rows × inter bf16, bit-identical to this GEMV then silu_and_mul_bf16; y_fp8 (optional) also
  // its E4M3 codes / *y_fp8_scale, as silu_and_mul_bf16's out_fp8.
  bool silu_mul = false;
  uint8_t* y_fp8 = nullptr;
  const float* y_fp8_scale = nullptr;
};

// Whether decode_gemv takes this shape: rows in [1, kDecodeGemvMaxRows], in a positive multiple of one 16-byte
// vector (8 bf16, 16 E4M3 / int8 elements), out positive.
bool decode_gemv_supports(SkinnyWeight type, int rows, int in, int out);

// Whether the variant can fuse SiLU-and-mul: it pairs gate and up rows in a CTA, so it needs an even number of
// features per CTA, and out must be even.
bool decode_gemv_silu_supports(int variant, int out);

void decode_gemv(const DecodeGemv& g, cudaStream_t stream);

}  // namespace qed::cuda
