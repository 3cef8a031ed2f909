#pragma once
// Which kernel runs a decode-sized GEMM (1..kSkinnyMaxRows rows), per weight format × layer shape × rows, from
// measurements on an H200 (bench/skinny_gemm, numbers and dates in bench/skinny_gemm/README.md), not from a
// heuristic: cuBLASLt, the decode GEMV family (decode_gemv.h, 1..4 rows, a compiled variant) or the skinny
// tensor-core kernel (gemv_kernels.h) with a fixed tiling and split. Shapes the
// table does not list take the choice measured best on the 14B layers for their format. Gemm::run_decode (for
// Gemm::run and LinearRunner::run) consults it; larger batches always run cuBLASLt.
//
// QED_DECODE_GEMM in the environment overrides the table for A/B runs (read once):
//   table        the table (also when unset)
//   cublaslt     cuBLASLt for bf16 and FP8; int8 on the skinny kernel's measured variant from 1 row (its
//                alternative is 9-13x slower): main's FP8 and int8 decode before decode_gemv
//   skinny       every decode GEMM on the skinny kernel (the table's tiling, else 2 tiles on a persistent grid)
//   decode_gemv[:VARIANT][:bits]  every 1..4-row GEMM on decode_gemv with VARIANT (a name such as w4f2u4; the
//                table's when absent), FP8 codes decoded by bit operations with :bits
#include <cstdint>

#include "backend/cuda/decode_gemv.h"
#include "backend/cuda/gemv_kernels.h"

namespace qed::cuda {

enum class DecodeGemmKernel : uint8_t { Cublaslt, Skinny, DecodeGemv };

struct DecodeGemmPlan {
  DecodeGemmKernel kernel = DecodeGemmKernel::Cublaslt;
  int tiles_per_warp = 0, splits = 0;  // Skinny: 0 = the launcher's choice
  bool persistent = false;             // Skinny: SkinnyGemm::persistent
  int gemv_variant = 0;                // DecodeGemv: index into kDecodeGemvVariants
  bool fp8_bits = false;               // DecodeGemv, FP8: DecodeGemv::fp8_bits
};

DecodeGemmPlan decode_gemm_plan(SkinnyWeight type, int rows, int out, int in);

// The variant index of a name such as "w4f2u4", or -1.
int decode_gemv_variant_index(const char* name);

// The launch descriptions of the plan's kernel for these operands (workspace and counters of a split skinny launch
// are Gemm::run_skinny's to fill in).
SkinnyGemm skinny_gemm_for(const DecodeGemmOperands& o, const DecodeGemmPlan& plan);
DecodeGemv decode_gemv_for(const DecodeGemmOperands& o, const DecodeGemmPlan& plan, bool pdl);

}  // namespace qed::cuda
