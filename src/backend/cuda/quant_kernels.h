#pragma once
// The kernels of the quantized linear layers (docs/cuda.md "Quantized checkpoints"): FP8 E4M3 activation
// quantization for the FP8 GEMMs, the per-channel dequantisation epilogue, and the int8 weight-only dequantize-to-bf16
// for cuBLASLt at larger batches (decode batches run gemv_kernels.h's skinny kernels). Each mirrors an op of
// backend/cpu/quant_ops.h, the reference its tests compare against. Scales are device float pointers so a dynamic
// (computed on the device) scale and a static one (from the checkpoint) take the same path, and CUDA graphs capture
// either.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace qed::cuda {

// out[i] = E4M3 code of x[i] / *scale: IEEE division, round to nearest even, saturating at ±448, NaN → 0x7F;
// bit-identical to cpu::quantize_fp8 on the bf16 value.
void quantize_fp8_bf16(const uint16_t* x, size_t n, const float* scale, uint8_t* out, cudaStream_t stream);

// *scale = cpu::fp8_scale_for_amax(max |x|) over n bf16 (vLLM's dynamic per-tensor activation scale): amax / 448,
// or 1 for an all-zero input. NaN inputs are skipped (the CPU backend fails on them; a GPU forward cannot throw).
void dynamic_fp8_scale_bf16(const uint16_t* x, size_t n, float* scale, cudaStream_t stream);

// y[r][j] = bf16(acc[r][j] * (x_scale · w_scales[j]) + bias[j]): the dequantisation of a GEMM that accumulated
// unscaled products in fp32 (per-channel FP8, int8 weight-only). x_scale (one float) may be null (= 1), bias
// (bf16 [out]) may be null; w_scales holds `out` floats.
void scale_rows_to_bf16(const float* acc, const float* x_scale, const float* w_scales, const uint16_t* bias,
                        uint16_t* y, int rows, int out, cudaStream_t stream);

// out[i] = bf16(q[i]): int8 codes are integers of at most 8 significant bits, exact in bf16.
void int8_to_bf16(const int8_t* q, size_t n, uint16_t* out, cudaStream_t stream);

// Random weights for benchmarks: n int8 codes uniform in [-127, 127] from a hash of (seed, index).
void fill_uniform_int8(int8_t* out, size_t n, uint64_t seed, cudaStream_t stream);

}  // namespace qed::cuda
