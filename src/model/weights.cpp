#include "model/weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

#include "core/error.h"

namespace qed {
namespace {

struct Binder {
  const Checkpoint& checkpoint;
  const QuantizationConfig& quantization;

  const TensorInfo* find_shaped(const std::string& name, const std::vector<int64_t>& shape) const {
    const TensorInfo* tensor = checkpoint.find(name);
    if (!tensor) fail("{}: missing tensor '{}'", checkpoint.dir(), name);
    if (tensor->shape != shape) {
      fail("{}: tensor '{}' has shape [{}], expected [{}]", checkpoint.dir(), name, fmt::join(tensor->shape, ", "),
           fmt::join(shape, ", "));
    }
    return tensor;
  }

  // A scale: one float (shape [] or [1]), or one per output channel (shape [out] or [out, 1]) when out > 0.
  const TensorInfo* scale(const std::string& name, int64_t out) const {
    const TensorInfo* tensor = checkpoint.find(name);
    if (!tensor) {
      fail("{}: missing tensor '{}' (the checkpoint is {}-quantized)", checkpoint.dir(), name, quantization.format);
    }
    const std::vector<int64_t>& s = tensor->shape;
    const bool per_tensor = s.empty() || s == std::vector<int64_t>{1};
    const bool per_channel = out > 0 && (s == std::vector<int64_t>{out} || s == std::vector<int64_t>{out, 1});
    if (!per_tensor && !per_channel) {
      fail("{}: scale '{}' has shape [{}], expected [] or [1]{}", checkpoint.dir(), name, fmt::join(s, ", "),
           out > 0 ? fmt::format(" or [{}] or [{}, 1]", out, out) : std::string());
    }
    if (tensor->dtype != DType::F32 && tensor->dtype != DType::F16 && tensor->dtype != DType::BF16) {
      fail("{}: scale '{}' has dtype {}, expected F32, F16 or BF16", checkpoint.dir(), name, dtype_name(tensor->dtype));
    }
    return tensor;
  }

  // weight_scale_inv of a block-wise FP8 weight of `shape` [out, in]. Output rows may end in a partial block (vLLM
  // and DeepSeek-V3 use ceil); the input columns must split into whole blocks, because activations are quantized
  // per group of block_in columns and neither vLLM nor transformers defines a partial group.
  const TensorInfo* block_scale(const std::string& module, const std::vector<int64_t>& shape) const {
    const int64_t bo = quantization.block_out, bi = quantization.block_in;
    if (shape[1] % bi != 0) {
      fail("{}: '{}.weight' has {} input columns, not a multiple of weight_block_size[1] = {}", checkpoint.dir(),
           module, shape[1], bi);
    }
    const std::string name = module + ".weight_scale_inv";
    const TensorInfo* tensor = checkpoint.find(name);
    if (!tensor) {
      fail("{}: missing tensor '{}' (the checkpoint is block-wise FP8, weight_block_size [{}, {}])", checkpoint.dir(),
           name, bo, bi);
    }
    const std::vector<int64_t> expected{(shape[0] + bo - 1) / bo, shape[1] / bi};
    // Some transformers versions squeeze the grid (a [1, n] grid saved as [n]); dropping size-1 dimensions keeps
    // the row-major order, so such a scale reads the same.
    auto squeezed = [](std::vector<int64_t> dims) {
      std::erase(dims, int64_t{1});
      return dims;
    };
    if (tensor->shape != expected && squeezed(tensor->shape) != squeezed(expected)) {
      fail("{}: scale '{}' has shape [{}], expected [{}] (weight [{}] in blocks of [{}, {}])", checkpoint.dir(), name,
           fmt::join(tensor->shape, ", "), fmt::join(expected, ", "), fmt::join(shape, ", "), bo, bi);
    }
    if (tensor->dtype != DType::F32 && tensor->dtype != DType::F16 && tensor->dtype != DType::BF16) {
      fail("{}: scale '{}' has dtype {}, expected F32, F16 or BF16", checkpoint.dir(), name, dtype_name(tensor->dtype));
    }
    return tensor;
  }

  // The weight of linear module `module` (name without ".weight"), quantized or not as the config says.
  const TensorInfo* linear(const std::string& module, std::vector<int64_t> shape, LinearScales& scales) const {
    if (!quantization.is_quantized_module(module)) return require(module + ".weight", std::move(shape));
    const TensorInfo* weight = find_shaped(module + ".weight", shape);
    const DType expected = quantization.method == QuantMethod::Fp8 ? DType::F8_E4M3 : DType::I8;
    if (weight->dtype != expected) {
      fail("{}: tensor '{}.weight' has dtype {}, expected {} ({} checkpoint)", checkpoint.dir(), module,
           dtype_name(weight->dtype), dtype_name(expected), quantization.format);
    }
    if (quantization.block_wise()) {
      scales.block_scale = block_scale(module, shape);
      scales.block_out = quantization.block_out;
      scales.block_in = quantization.block_in;
      return weight;
    }
    scales.weight_scale = scale(module + ".weight_scale", shape[0]);
    if (quantization.method == QuantMethod::Fp8 && quantization.activations == ActivationScheme::Static) {
      scales.input_scale = scale(module + ".input_scale", 0);
    }
    return weight;
  }

  // vLLM's maybe_remap_kv_scale_name accepts self_attn.k_scale, self_attn.attn.k_scale and ModelOpt's
  // self_attn.k_proj.k_scale; so do we.
  const TensorInfo* kv_scale(int layer, char kv) const {
    for (const char* form : {"self_attn.{}_scale", "self_attn.attn.{}_scale", "self_attn.{}_proj.{}_scale"}) {
      std::string suffix = fmt::format(fmt::runtime(form), kv, kv);
      if (checkpoint.find(layer_tensor_name(layer, suffix))) return scale(layer_tensor_name(layer, suffix), 0);
    }
    return nullptr;
  }

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

ModelWeights ModelWeights::bind(const Checkpoint& checkpoint, const ModelConfig& config, bool allow_quantized) {
  if (config.quantization.quantized() && !allow_quantized) {
    fail("{}: the checkpoint is quantized ({}, quant_method '{}'); this backend runs F32/F16/BF16 weights only",
         checkpoint.dir(), to_string(config.quantization.method), config.quantization.format);
  }
  const Binder b{checkpoint, config.quantization};
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
    layer.q_proj = b.linear(name("self_attn.q_proj"), {q_dim, hidden}, layer.q_proj_scales);
    layer.k_proj = b.linear(name("self_attn.k_proj"), {kv_dim, hidden}, layer.k_proj_scales);
    layer.v_proj = b.linear(name("self_attn.v_proj"), {kv_dim, hidden}, layer.v_proj_scales);
    layer.o_proj = b.linear(name("self_attn.o_proj"), {hidden, q_dim}, layer.o_proj_scales);
    layer.q_bias = b.require_if(qkv_bias, name("self_attn.q_proj.bias"), {q_dim});
    layer.k_bias = b.require_if(qkv_bias, name("self_attn.k_proj.bias"), {kv_dim});
    layer.v_bias = b.require_if(qkv_bias, name("self_attn.v_proj.bias"), {kv_dim});
    layer.o_bias = b.require_if(o_bias, name("self_attn.o_proj.bias"), {hidden});
    layer.post_attention_norm = b.require(name("post_attention_layernorm.weight"), {hidden});
    layer.gate_proj = b.linear(name("mlp.gate_proj"), {inter, hidden}, layer.gate_proj_scales);
    layer.up_proj = b.linear(name("mlp.up_proj"), {inter, hidden}, layer.up_proj_scales);
    layer.down_proj = b.linear(name("mlp.down_proj"), {hidden, inter}, layer.down_proj_scales);
    layer.gate_bias = b.require_if(config.mlp_bias, name("mlp.gate_proj.bias"), {inter});
    layer.up_bias = b.require_if(config.mlp_bias, name("mlp.up_proj.bias"), {inter});
    layer.down_bias = b.require_if(config.mlp_bias, name("mlp.down_proj.bias"), {hidden});
    if (allow_quantized) {
      layer.k_cache_scale = b.kv_scale(i, 'k');
      layer.v_cache_scale = b.kv_scale(i, 'v');
      if (!layer.k_cache_scale != !layer.v_cache_scale) {
        fail("{}: layer {} has only one of the KV-cache scales k_scale / v_scale", checkpoint.dir(), i);
      }
    }
    weights.layers.push_back(layer);
  }
  weights.final_norm = b.require("model.norm.weight", {hidden});
  weights.lm_head = config.tie_word_embeddings ? weights.embed_tokens : b.require("lm_head.weight", {vocab, hidden});
  return weights;
}

float scalar_scale(const TensorInfo& tensor) {
  if (tensor.numel() != 1) fail("scale '{}' has {} elements, expected 1", tensor.name, tensor.numel());
  const float value = tensor.at(0);
  if (!std::isfinite(value) || value <= 0.0f)
    fail("scale '{}' is {}, expected a finite positive value", tensor.name, value);
  return value;
}

std::vector<float> linear_to_f32(const TensorInfo& weight, const LinearScales& scales) {
  std::vector<float> out = tensor_to_f32(weight);
  if (scales.block_scale) {
    const TensorInfo& scale = *scales.block_scale;
    const size_t rows = size_t(weight.shape.at(0)), cols = size_t(weight.shape.at(1));
    const size_t blocks_per_row = cols / size_t(scales.block_in);  // the scale may be stored squeezed
    for (size_t r = 0; r < rows; ++r) {
      for (size_t c = 0; c < cols; ++c) {
        const size_t index = (r / size_t(scales.block_out)) * blocks_per_row + c / size_t(scales.block_in);
        const float s = scale.at(index);
        if (!std::isfinite(s) || s <= 0.0f) {
          fail("scale '{}' [{}, {}] is {}, expected a finite positive value", scale.name, index / blocks_per_row,
               index % blocks_per_row, s);
        }
        out[r * cols + c] *= s;
      }
    }
    return out;
  }
  if (!scales.weight_scale) return out;
  const TensorInfo& scale = *scales.weight_scale;
  const size_t rows = size_t(weight.shape.at(0));
  const size_t cols = out.size() / rows;
  const bool per_channel = scale.numel() != 1;
  for (size_t r = 0; r < rows; ++r) {
    const float s = per_channel ? scale.at(r) : scale.at(0);
    if (!std::isfinite(s) || s <= 0.0f) {
      fail("scale '{}' [{}] is {}, expected a finite positive value", scale.name, per_channel ? r : 0, s);
    }
    for (size_t c = 0; c < cols; ++c) out[r * cols + c] *= s;
  }
  return out;
}

std::vector<float> tensor_to_f32(const TensorInfo& tensor) {
  std::vector<float> out(size_t(tensor.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = tensor.at(i);
  return out;
}

}  // namespace qed
