#include "model/weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"

namespace qed {
namespace {

struct Binder {
  const Checkpoint& checkpoint;

  const TensorInfo* require(const std::string& name, std::vector<int64_t> shape) const {
    const TensorInfo* tensor = checkpoint.find(name);
    if (!tensor) fail("{}: missing tensor '{}'", checkpoint.dir(), name);
    if (tensor->shape != shape) {
      fail("{}: tensor '{}' has shape [{}], expected [{}]", checkpoint.dir(), name, fmt::join(tensor->shape, ", "),
           fmt::join(shape, ", "));
    }
    if (tensor->dtype != DType::F32 && tensor->dtype != DType::F16 && tensor->dtype != DType::BF16) {
      fail("{}: tensor '{}' has dtype {}, expected F32, F16 or BF16", checkpoint.dir(), name,
           dtype_name(tensor->dtype));
    }
    return tensor;
  }
  const TensorInfo* require_if(bool wanted, const std::string& name, std::vector<int64_t> shape) const {
    return wanted ? require(name, std::move(shape)) : nullptr;
  }
};

}  // namespace

std::string layer_tensor_name(int layer, const std::string& suffix) {
  return fmt::format("model.layers.{}.{}", layer, suffix);
}

ModelWeights ModelWeights::bind(const Checkpoint& checkpoint, const ModelConfig& config) {
  const Binder b{checkpoint};
  const int64_t hidden = config.hidden_size;
  const int64_t q_dim = int64_t(config.num_heads) * config.head_dim;
  const int64_t kv_dim = int64_t(config.num_kv_heads) * config.head_dim;
  const int64_t inter = config.intermediate_size;
  const int64_t vocab = config.vocab_size;
  // Qwen2 puts a bias on q/k/v only; Llama's attention_bias covers o_proj as well (as in transformers).
  const bool qkv_bias = config.attention_bias;
  const bool o_bias = config.attention_bias && config.architecture == Architecture::Llama;

  ModelWeights weights;
  weights.embed_tokens = b.require("model.embed_tokens.weight", {vocab, hidden});
  for (int i = 0; i < config.num_layers; ++i) {
    auto name = [i](const char* suffix) { return layer_tensor_name(i, suffix); };
    LayerWeights layer;
    layer.input_norm = b.require(name("input_layernorm.weight"), {hidden});
    layer.q_proj = b.require(name("self_attn.q_proj.weight"), {q_dim, hidden});
    layer.k_proj = b.require(name("self_attn.k_proj.weight"), {kv_dim, hidden});
    layer.v_proj = b.require(name("self_attn.v_proj.weight"), {kv_dim, hidden});
    layer.o_proj = b.require(name("self_attn.o_proj.weight"), {hidden, q_dim});
    layer.q_bias = b.require_if(qkv_bias, name("self_attn.q_proj.bias"), {q_dim});
    layer.k_bias = b.require_if(qkv_bias, name("self_attn.k_proj.bias"), {kv_dim});
    layer.v_bias = b.require_if(qkv_bias, name("self_attn.v_proj.bias"), {kv_dim});
    layer.o_bias = b.require_if(o_bias, name("self_attn.o_proj.bias"), {hidden});
    layer.post_attention_norm = b.require(name("post_attention_layernorm.weight"), {hidden});
    layer.gate_proj = b.require(name("mlp.gate_proj.weight"), {inter, hidden});
    layer.up_proj = b.require(name("mlp.up_proj.weight"), {inter, hidden});
    layer.down_proj = b.require(name("mlp.down_proj.weight"), {hidden, inter});
    layer.gate_bias = b.require_if(config.mlp_bias, name("mlp.gate_proj.bias"), {inter});
    layer.up_bias = b.require_if(config.mlp_bias, name("mlp.up_proj.bias"), {inter});
    layer.down_bias = b.require_if(config.mlp_bias, name("mlp.down_proj.bias"), {hidden});
    weights.layers.push_back(layer);
  }
  weights.final_norm = b.require("model.norm.weight", {hidden});
  weights.lm_head = config.tie_word_embeddings ? weights.embed_tokens : b.require("lm_head.weight", {vocab, hidden});
  return weights;
}

std::vector<float> tensor_to_f32(const TensorInfo& tensor) {
  std::vector<float> out(size_t(tensor.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = tensor.at(i);
  return out;
}

}  // namespace qed
