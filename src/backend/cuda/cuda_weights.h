#pragma once
// A model's weights on the device, bf16, in the layout the CUDA forward wants: q/k/v fused into one [q + 2 kv,
// hidden] matrix (one GEMM), gate/up fused into [2 × intermediate, hidden]. Uploaded once from the mmap'd
// safetensors, or generated on the device from a seed for a model shape with no checkpoint (benchmarks).
#include <cstdint>
#include <vector>

#include "backend/cuda/device.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace qed::cuda {

struct CudaLayerWeights {
  DeviceBuffer input_norm, post_attention_norm;
  DeviceBuffer qkv, qkv_bias;  // bias empty when the architecture has none
  DeviceBuffer o_proj, o_bias;
  DeviceBuffer gate_up, gate_up_bias;
  DeviceBuffer down_proj, down_bias;
};

struct CudaModelWeights {
  DeviceBuffer embed_tokens;  // [vocab, hidden]
  DeviceBuffer lm_head;       // empty when tied (embed_tokens serves)
  DeviceBuffer final_norm;
  std::vector<CudaLayerWeights> layers;
  size_t bytes = 0;

  // Binds the checkpoint's tensors (ModelWeights::bind checks names, shapes, dtypes) and copies them up; bf16
  // tensors go straight from the mmap, f16/f32 ones are rounded to bf16 on the host first.
  static CudaModelWeights upload(const Checkpoint& checkpoint, const ModelConfig& config);
  // Uniform random matrices with the scale of HF's initializer_range (0.02) and unit norms: a model of the right
  // shape and cost whose outputs mean nothing.
  static CudaModelWeights random(const ModelConfig& config, uint64_t seed);
};

}  // namespace qed::cuda
