#pragma once
// SiLU(gate) · up in fp32, the one formula of silu_and_mul_bf16 (elementwise_kernels.cu) and of the gate_up GEMV
// that fuses it (decode_gemv_tile.cuh), so the two paths give the same bits.

namespace qed::cuda {

__device__ __forceinline__ float silu_mul(float g, float u) {
  return (g / (1.0f + expf(-g))) * u;
}

}  // namespace qed::cuda
