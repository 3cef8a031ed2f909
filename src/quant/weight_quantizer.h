#pragma once
// One linear weight → its quantized codes and scales, streamed: the bf16 (or f16/f32) source is read from the
// checkpoint's mmap in chunks and the codes handed to `sink` chunk by chunk, so quantizing a tensor needs a few MB
// however large it is. The numbers are those of the reference ops (backend/cpu/quant_ops.h) applied to the whole
// tensor: the same bytes as quantizing an fp32 copy in one call.
#include <cstddef>
#include <functional>
#include <vector>

#include "model/safetensors.h"

namespace qed::quant {

// Receives `bytes` bytes of codes that belong at byte `offset` of the quantized tensor.
using CodeSink = std::function<void(size_t offset, const void* data, size_t bytes)>;

// FP8 E4M3: scale amax(W) / 448 per tensor (one scale returned) or per output row (rows scales). Throws naming the
// tensor if a weight is not finite.
std::vector<float> quantize_fp8_streamed(const TensorInfo& weight, bool per_channel, const CodeSink& sink);
// int8, symmetric per output row: scale amax(row) / 127. Throws naming the tensor if a weight is not finite.
std::vector<float> quantize_int8_streamed(const TensorInfo& weight, const CodeSink& sink);

}  // namespace qed::quant
