#pragma once
// The CUDA-core bf16 GEMV for one or two rows: y[r][n] = x[r] · W[n] (+ bias[n]), fp32 FMAs, W streamed once with
// 16-byte loads, two weight rows per warp sharing each load of x. Measured on an H200 (14B shape, decode with CUDA
// graphs): batch 1 at 114 tok/s with it against 81 on the first skinny tensor-core kernel, while at 4 rows it was
// slower than cuBLASLt (10.9 ms a step vs 9.9 at 5 rows), so decode_gemm_plan.h sends it 1-2 rows only.
#include <cuda_runtime.h>

#include <cstdint>

namespace qed::cuda {

inline constexpr int kGemvMaxRows = 4;

// Whether gemv_bf16 takes this shape: rows in [1, kGemvMaxRows], in_features a multiple of 8 (16-byte rows).
bool gemv_supports(int rows, int in_features);

// x: rows × in bf16, w: out × in bf16 (row-major, nn.Linear), bias: out bf16 or null; y: rows × out, bf16 or (f32_out)
// fp32. All pointers 16-byte aligned.
void gemv_bf16(const uint16_t* x, const uint16_t* w, const uint16_t* bias, void* y, bool f32_out, int rows, int out,
               int in, cudaStream_t stream);

}  // namespace qed::cuda
