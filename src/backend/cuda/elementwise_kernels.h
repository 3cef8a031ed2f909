#pragma once
// The small per-token kernels of a decoder layer: row gather (embedding lookup, logits-row selection), RoPE,
// SiLU-and-mul. bf16 tensors are passed as uint16_t bits so host code needs no CUDA headers beyond the runtime.
// Each mirrors an op of backend/cpu/cpu_ops.h and computes in fp32, rounding to bf16 once at the store.
#include <cuda_runtime.h>

#include <cstdint>

namespace qed::cuda {

// out[r] = table[ids[r]] for rows of `dim` bf16 (cpu::embedding). ids are device int32, already range-checked.
void gather_rows_bf16(const uint16_t* table, const int32_t* ids, uint16_t* out, int rows, int dim, cudaStream_t stream);

// In-place RoPE (cpu::rope, HF rotate_half) on the first `num_heads` heads of each row of x, rows `row_stride`
// elements apart (so q and k inside one fused qkv row are rotated by one launch). positions and inv_freq
// (head_dim / 2 floats, from cpu::rope_inv_freq) are device arrays.
void rope_bf16(uint16_t* x, int row_stride, const int32_t* positions, const float* inv_freq, int rows, int num_heads,
               int head_dim, cudaStream_t stream);

// out[r][i] = silu(gate_up[r][i]) * gate_up[r][inter + i] (cpu::silu_and_mul), out is rows × inter.
// out_fp8 (optional): also the E4M3 codes of out / *fp8_scale (a static-scale FP8 down_proj's input),
// bit-identical to quantize_fp8_bf16 on out.
void silu_and_mul_bf16(const uint16_t* gate_up, uint16_t* out, int rows, int inter, cudaStream_t stream,
                       uint8_t* out_fp8 = nullptr, const float* fp8_scale = nullptr);

// bf16 → fp32 / fp32 → bf16 conversion of n elements (hidden-state readback, test plumbing).
void bf16_to_f32(const uint16_t* in, float* out, size_t n, cudaStream_t stream);
void f32_to_bf16(const float* in, uint16_t* out, size_t n, cudaStream_t stream);

// Fills n bf16 with values uniform in [low, high) from a counter-based hash of (seed, index): random weights of a
// model shape generated on the device (qed bench offline), reproducible from the seed, no host traffic.
void fill_uniform_bf16(uint16_t* out, size_t n, uint64_t seed, float low, float high, cudaStream_t stream);

}  // namespace qed::cuda
