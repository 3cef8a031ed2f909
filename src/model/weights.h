#pragma once
// The tensors of a Qwen2/Llama checkpoint, found by their HF names and checked against the config once, so every
// backend (CPU reference, CUDA) reads the same views and a bad checkpoint fails at load with the tensor's name.
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/safetensors.h"

namespace qed {

// The scales of one quantized linear layer (all null when the layer is not quantized).
struct LinearScales {
  const TensorInfo* weight_scale = nullptr;  // [] or [1]: per tensor; [out] or [out, 1]: per output channel
  const TensorInfo* input_scale = nullptr;   // [] or [1]: static FP8 activation scale; null = dynamic or none
  // Block-wise FP8 instead of weight_scale: `weight_scale_inv` [ceil(out / block_out), in / block_in], the
  // dequantisation factor of each block (DeepSeek-V3's name; it is not a reciprocal): W[r][c] = q[r][c] ·
  // block_scale[r / block_out][c / block_in].
  const TensorInfo* block_scale = nullptr;
  int block_out = 0, block_in = 0;

  bool quantized() const { return weight_scale || block_scale; }
};

struct LayerWeights {
  const TensorInfo* input_norm = nullptr;  // [hidden]
  const TensorInfo* q_proj = nullptr;      // [heads * head_dim, hidden]
  const TensorInfo* k_proj = nullptr;      // [kv_heads * head_dim, hidden]
  const TensorInfo* v_proj = nullptr;      // [kv_heads * head_dim, hidden]
  const TensorInfo* o_proj = nullptr;      // [hidden, heads * head_dim]
  const TensorInfo* q_bias = nullptr;      // null when the architecture has none
  const TensorInfo* k_bias = nullptr;
  const TensorInfo* v_bias = nullptr;
  const TensorInfo* o_bias = nullptr;               // Llama with attention_bias only
  const TensorInfo* post_attention_norm = nullptr;  // [hidden]
  const TensorInfo* gate_proj = nullptr;            // [intermediate, hidden]
  const TensorInfo* up_proj = nullptr;              // [intermediate, hidden]
  const TensorInfo* down_proj = nullptr;            // [hidden, intermediate]
  const TensorInfo* gate_bias = nullptr;            // mlp_bias only
  const TensorInfo* up_bias = nullptr;
  const TensorInfo* down_bias = nullptr;
  // Quantized checkpoints only (see quantization_config): a linear layer's weight above is then F8_E4M3 or I8 and
  // its scales are here; the FP8 KV-cache scales are null when the checkpoint has none.
  LinearScales q_proj_scales, k_proj_scales, v_proj_scales, o_proj_scales;
  LinearScales gate_proj_scales, up_proj_scales, down_proj_scales;
  const TensorInfo* k_cache_scale = nullptr;  // self_attn.k_scale (or vLLM's/ModelOpt's other spellings), []
  const TensorInfo* v_cache_scale = nullptr;
};

struct ModelWeights {
  const TensorInfo* embed_tokens = nullptr;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  const TensorInfo* final_norm = nullptr;  // [hidden]
  const TensorInfo* lm_head = nullptr;     // [vocab, hidden]; the embedding itself when tie_word_embeddings

  // Looks up every tensor the config implies, checks shape and dtype (F32/F16/BF16); throws qed::Error naming the
  // tensor and the checkpoint directory. A quantized checkpoint (config.quantization) is refused unless the
  // backend says it runs one (allow_quantized): then quantized linear weights must have the quantized dtype and
  // their scales, which are bound too.
  static ModelWeights bind(const Checkpoint& checkpoint, const ModelConfig& config, bool allow_quantized = false);
};

// HF name of a per-layer tensor: "model.layers.<layer>.<suffix>".
std::string layer_tensor_name(int layer, const std::string& suffix);

// Reads a whole tensor as float32 (exact for F32/F16/BF16).
std::vector<float> tensor_to_f32(const TensorInfo& tensor);

// A linear weight as float32: the stored values times weight_scale (per tensor, or per output row) or times its
// block's scale, or the plain values when `scales` has none. Throws if a scale is not finite and positive.
std::vector<float> linear_to_f32(const TensorInfo& weight, const LinearScales& scales);

// The value of a one-element scale tensor; throws naming it unless finite and positive.
float scalar_scale(const TensorInfo& tensor);

}  // namespace qed
