#pragma once
// The tensors of a Qwen2/Llama checkpoint, found by their HF names and checked against the config once, so every
// backend (CPU reference, CUDA) reads the same views and a bad checkpoint fails at load with the tensor's name.
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/safetensors.h"

namespace qed {

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
};

struct ModelWeights {
  const TensorInfo* embed_tokens = nullptr;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  const TensorInfo* final_norm = nullptr;  // [hidden]
  const TensorInfo* lm_head = nullptr;     // [vocab, hidden]; the embedding itself when tie_word_embeddings

  // Looks up every tensor the config implies, checks shape and dtype (F32/F16/BF16); throws qed::Error naming the
  // tensor and the checkpoint directory.
  static ModelWeights bind(const Checkpoint& checkpoint, const ModelConfig& config);
};

// HF name of a per-layer tensor: "model.layers.<layer>.<suffix>".
std::string layer_tensor_name(int layer, const std::string& suffix);

// Reads a whole tensor as float32 (exact for F32/F16/BF16).
std::vector<float> tensor_to_f32(const TensorInfo& tensor);

}  // namespace qed
