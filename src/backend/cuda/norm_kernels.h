#pragma once
// RMSNorm fused with the residual add: the first kernel of each decoder layer.
#include <cuda_runtime.h>

#include <cstdint>

namespace qed::cuda {

// For each of `rows` rows of width `dim` (bf16 stored as uint16 bits):
//   if residual: residual = x + residual (bf16), then y = rmsnorm(residual) * weight
//   else:        y = rmsnorm(x) * weight
// Accumulates in fp32 like HF's Qwen2RMSNorm (hidden.to(float32), variance, rsqrt, cast back, * weight).
// y_fp8 (optional): also the E4M3 codes of y / *fp8_scale (the input of a static-scale FP8 GEMM), bit-identical to
// quantize_fp8_bf16 on y.
void rmsnorm_bf16(const uint16_t* x, uint16_t* residual, const uint16_t* weight, uint16_t* y, int rows, int dim,
                  float eps, cudaStream_t stream, uint8_t* y_fp8 = nullptr, const float* fp8_scale = nullptr);

}  // namespace qed::cuda
