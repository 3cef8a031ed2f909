#pragma once
// A model's weights on the device in the layout the CUDA forward wants: q/k/v fused into one [q + 2 kv, hidden]
// matrix (one GEMM), gate/up fused into [2 × intermediate, hidden]. Uploaded once from the mmap'd safetensors, or
// generated on the device from a seed for a model shape with no checkpoint (benchmarks). Linear layers are bf16,
// or, for quantized checkpoints (model/quant_config.h), FP8 E4M3 W8A8 or int8 weight-only; embeddings, norms,
// biases and lm_head stay bf16.
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/device.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace qed::cuda {

enum class LinearFormat : uint8_t { Bf16, Fp8, Int8WeightOnly };

// One (possibly fused) linear layer y = x · W^T (+ bias).
struct CudaLinear {
  LinearFormat format = LinearFormat::Bf16;
  int out = 0, in = 0;
  DeviceBuffer weight;        // out × in, row-major: bf16, E4M3 or int8 codes
  DeviceBuffer bias;          // bf16 [out]; empty when none
  DeviceBuffer weight_scale;  // fp32 dequantisation scales: [1] (fp8 per tensor) or [out] (per output channel)
  bool per_channel = false;
  DeviceBuffer input_scale;  // fp8: the static activation scale [1]; empty = dynamic (computed per forward)
};

struct CudaLayerWeights {
  DeviceBuffer input_norm, post_attention_norm;
  CudaLinear qkv, o_proj, gate_up, down_proj;
  // The checkpoint's FP8 KV-cache scales (self_attn.k_scale / v_scale); 0 when it has none. Used only when the
  // backend keeps an FP8 cache (CudaBackendOptions::kv_cache_dtype).
  float k_cache_scale = 0.0f, v_cache_scale = 0.0f;
};

// The element type of random weights (qed bench offline --dtype): bf16, FP8 with per-tensor weight scales and a
// static input scale, or int8 weight-only with per-channel scales.
enum class RandomWeightsDtype : uint8_t { Bf16, Fp8, Int8WeightOnly };
// "bf16" | "fp8" | "int8_wo"; throws naming the flag otherwise.
RandomWeightsDtype parse_random_weights_dtype(const std::string& name);

struct CudaModelWeights {
  DeviceBuffer embed_tokens;  // [vocab, hidden]
  DeviceBuffer lm_head;       // empty when tied (embed_tokens serves)
  DeviceBuffer final_norm;
  std::vector<CudaLayerWeights> layers;
  size_t bytes = 0;

  // Binds the checkpoint's tensors (ModelWeights::bind checks names, shapes, dtypes, scales) and copies them up;
  // bf16 tensors go straight from the mmap, f16/f32 ones are rounded to bf16 on the host first; quantized parts of
  // a fused layer are brought to one scale convention (quant_fusion.h).
  static CudaModelWeights upload(const Checkpoint& checkpoint, const ModelConfig& config);
  // Uniform random matrices with the scale of HF's initializer_range (0.02) and unit norms: a model of the right
  // shape and cost whose outputs mean nothing.
  static CudaModelWeights random(const ModelConfig& config, uint64_t seed,
                                 RandomWeightsDtype dtype = RandomWeightsDtype::Bf16);

  // Whether any linear layer is of this format (the backend sizes its scratch buffers and checks the device).
  bool has_format(LinearFormat format) const;
  // Whether the checkpoint came with FP8 KV-cache scales (for any layer).
  bool has_kv_cache_scales() const;
};

}  // namespace qed::cuda
