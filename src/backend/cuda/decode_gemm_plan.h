#pragma once
// Which kernel runs a decode-sized GEMM (1..kSkinnyMaxRows rows), per weight format × layer shape × rows, from
// measurements on an H200 (bench/skinny_gemm, numbers and dates in bench/skinny_gemm/README.md), not from a
// heuristic: cuBLASLt, the CUDA-core bf16 GEMV (bf16_gemv.h) or the skinny tensor-core kernel (gemv_kernels.h) with a
// fixed tiling and split. Shapes the table does not list take the choice measured best on the 14B layers for their
// format. Gemm::run and LinearRunner::run consult it; larger batches always run cuBLASLt. For A/B runs,
// QED_DECODE_GEMM=skinny in the environment sends every decode GEMM to the skinny kernel.
#include <cstdint>

#include "backend/cuda/gemv_kernels.h"

namespace qed::cuda {

enum class DecodeGemmKernel : uint8_t { Cublaslt, Gemv, Skinny };

struct DecodeGemmPlan {
  DecodeGemmKernel kernel = DecodeGemmKernel::Cublaslt;
  int tiles_per_warp = 0, splits = 0;  // Skinny: 0 = the launcher's choice
  bool persistent = false;             // Skinny: SkinnyGemm::persistent
};

DecodeGemmPlan decode_gemm_plan(SkinnyWeight type, int rows, int out, int in);

}  // namespace qed::cuda
