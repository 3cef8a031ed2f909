#pragma once
// Skinny GEMMs (decode: a few rows) as a bandwidth-bound GEMV: y[r][n] = x[r] · W[n] (+ bias[n]), fp32 accumulation,
// W streamed once with 16-byte loads. cuBLASLt's picks for these shapes reached 3.1 TB/s of the H200's 4.8 on the
// 14B qkv/o projections (ncu, batch-1 decode); this kernel is for rows <= kGemvMaxRows, the rest stays on cuBLASLt.
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
