#include "backend/cuda/cuda_weights.h"

#include <cuda_runtime.h>

#include <initializer_list>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise_kernels.h"
#include "core/dtype.h"
#include "core/error.h"
#include "model/weights.h"

namespace qed::cuda {
namespace {

// The parts, concatenated along their first dimension (row-major, so byte-concatenated), as one bf16 buffer.
DeviceBuffer upload_concat(std::initializer_list<const TensorInfo*> parts, size_t& total_bytes) {
  size_t elements = 0;
  for (const TensorInfo* t : parts) elements += size_t(t->numel());
  DeviceBuffer buffer(elements * sizeof(uint16_t));
  total_bytes += buffer.bytes();
  size_t at = 0;
  std::vector<uint16_t> converted;
  for (const TensorInfo* t : parts) {
    const size_t n = size_t(t->numel());
    uint16_t* dst = buffer.as<uint16_t>() + at;
    if (t->dtype == DType::BF16) {
      QED_CUDA_CHECK(cudaMemcpy(dst, t->data, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    } else {
      converted.resize(n);
      for (size_t i = 0; i < n; ++i) converted[i] = float_to_bf16(t->at(i));
      QED_CUDA_CHECK(cudaMemcpy(dst, converted.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    }
    at += n;
  }
  return buffer;
}

DeviceBuffer upload_optional(std::initializer_list<const TensorInfo*> parts, size_t& total_bytes) {
  for (const TensorInfo* t : parts) {
    if (!t) return {};
  }
  return upload_concat(parts, total_bytes);
}

struct RandomFill {
  uint64_t seed;
  uint64_t next = 0;
  size_t* total_bytes;

  DeviceBuffer matrix(size_t elements, float low, float high) {
    DeviceBuffer buffer(elements * sizeof(uint16_t));
    *total_bytes += buffer.bytes();
    fill_uniform_bf16(buffer.as<uint16_t>(), elements, seed * 0x100000001B3ull + next++, low, high, nullptr);
    return buffer;
  }
};

}  // namespace

CudaModelWeights CudaModelWeights::upload(const Checkpoint& checkpoint, const ModelConfig& config) {
  const ModelWeights w = ModelWeights::bind(checkpoint, config);
  CudaModelWeights out;
  out.embed_tokens = upload_concat({w.embed_tokens}, out.bytes);
  if (!config.tie_word_embeddings) out.lm_head = upload_concat({w.lm_head}, out.bytes);
  out.final_norm = upload_concat({w.final_norm}, out.bytes);
  for (const LayerWeights& l : w.layers) {
    CudaLayerWeights layer;
    layer.input_norm = upload_concat({l.input_norm}, out.bytes);
    layer.post_attention_norm = upload_concat({l.post_attention_norm}, out.bytes);
    layer.qkv = upload_concat({l.q_proj, l.k_proj, l.v_proj}, out.bytes);
    layer.qkv_bias = upload_optional({l.q_bias, l.k_bias, l.v_bias}, out.bytes);
    layer.o_proj = upload_concat({l.o_proj}, out.bytes);
    layer.o_bias = upload_optional({l.o_bias}, out.bytes);
    layer.gate_up = upload_concat({l.gate_proj, l.up_proj}, out.bytes);
    layer.gate_up_bias = upload_optional({l.gate_bias, l.up_bias}, out.bytes);
    layer.down_proj = upload_concat({l.down_proj}, out.bytes);
    layer.down_bias = upload_optional({l.down_bias}, out.bytes);
    out.layers.push_back(std::move(layer));
  }
  // Pageable-memory copies may still be in flight when cudaMemcpy returns; the forward runs on its own stream.
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  return out;
}

CudaModelWeights CudaModelWeights::random(const ModelConfig& config, uint64_t seed) {
  config.validate("random weights");
  CudaModelWeights out;
  RandomFill fill{seed, 0, &out.bytes};
  const size_t hidden = size_t(config.hidden_size);
  const size_t q_dim = size_t(config.num_heads) * config.head_dim;
  const size_t kv_dim = size_t(config.num_kv_heads) * config.head_dim;
  const size_t inter = size_t(config.intermediate_size);
  const float a = 0.02f * 1.7320508f;  // uniform [-a, a) has the standard deviation 0.02 of HF's init
  out.embed_tokens = fill.matrix(size_t(config.vocab_size) * hidden, -a, a);
  if (!config.tie_word_embeddings) out.lm_head = fill.matrix(size_t(config.vocab_size) * hidden, -a, a);
  out.final_norm = fill.matrix(hidden, 1.0f, 1.0f);
  for (int l = 0; l < config.num_layers; ++l) {
    CudaLayerWeights layer;
    layer.input_norm = fill.matrix(hidden, 1.0f, 1.0f);
    layer.post_attention_norm = fill.matrix(hidden, 1.0f, 1.0f);
    layer.qkv = fill.matrix((q_dim + 2 * kv_dim) * hidden, -a, a);
    if (config.attention_bias) layer.qkv_bias = fill.matrix(q_dim + 2 * kv_dim, -a, a);
    layer.o_proj = fill.matrix(hidden * q_dim, -a, a);
    if (config.attention_bias && config.architecture == Architecture::Llama) layer.o_bias = fill.matrix(hidden, -a, a);
    layer.gate_up = fill.matrix(2 * inter * hidden, -a, a);
    if (config.mlp_bias) layer.gate_up_bias = fill.matrix(2 * inter, -a, a);
    layer.down_proj = fill.matrix(hidden * inter, -a, a);
    if (config.mlp_bias) layer.down_bias = fill.matrix(hidden, -a, a);
    out.layers.push_back(std::move(layer));
  }
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  return out;
}

}  // namespace qed::cuda
