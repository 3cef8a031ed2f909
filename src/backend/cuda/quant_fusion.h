#pragma once
// Host-side preparation of quantized linear weights for the CUDA backend, which fuses q/k/v and gate/up into one
// GEMM each: the parts' E4M3/int8 codes are concatenated and their scales brought to one convention. Pure host code
// (no CUDA), tested on the CPU (tests/backend_cuda/quant_fusion_test.cpp).
#include <cstdint>
#include <vector>

#include "model/safetensors.h"

namespace qed::cuda {

// One part of a fused linear layer as the checkpoint holds it.
struct QuantPart {
  const uint8_t* codes = nullptr;  // rows × cols E4M3 or int8 codes, row-major
  int rows = 0;
  std::vector<float> scales;  // dequantisation scales: 1 (per tensor) or `rows` (per output channel)
};

struct FusedFp8 {
  std::vector<uint8_t> codes;  // (sum of rows) × cols
  std::vector<float> scales;   // 1 when per tensor, else one per output row
  bool per_channel = false;
};

// E4M3 parts fused. Per-channel if any part is (per-tensor parts broadcast their scale: exact). All per-tensor
// with one scale: unchanged. All per-tensor with different scales: every part is requantized to the largest scale,
// code = quantize_fp8(dequantize(code, s_i), s_max), as vLLM's requantize_with_max_scale does for its fused
// QKV/gate-up layers, so one per-tensor scale (and cuBLASLt's per-tensor FP8 GEMM) serves the fused matrix.
FusedFp8 fuse_fp8_parts(const std::vector<QuantPart>& parts, int cols);

// One scale per output row of the fused matrix (int8 weight-only, always per channel): the parts' scales
// concatenated, a per-tensor part's scale repeated over its rows.
std::vector<float> fuse_channel_scales(const std::vector<QuantPart>& parts);

// A scale tensor's values as float32; throws naming the tensor unless every value is finite and positive.
std::vector<float> scale_values(const TensorInfo& scale);

}  // namespace qed::cuda
