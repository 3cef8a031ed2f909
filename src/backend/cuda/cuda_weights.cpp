#include "backend/cuda/cuda_weights.h"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <mutex>

#include "backend/cpu/quant_ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/quant_fusion.h"
#include "backend/cuda/quant_kernels.h"
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

template <typename T>
DeviceBuffer upload_vector(const std::vector<T>& values, size_t& total_bytes) {
  DeviceBuffer buffer(values.size() * sizeof(T));
  buffer.upload(values.data(), buffer.bytes());
  total_bytes += buffer.bytes();
  return buffer;
}

struct LinearPart {
  const TensorInfo* weight;
  const LinearScales* scales;
};

// Block-wise FP8 on a backend without a block-scaled GEMM: every weight dequantized exactly (q · weight_scale_inv of
// its block, in fp32, as the CPU backend does) and rounded once to bf16, and the layer run as bf16 with unquantized
// activations. Requantizing to per-channel FP8 with per-tensor activations instead was measured further from the
// format than plain bf16 is (docs/quantize.md "Block-wise FP8"); this keeps the weights' values and bf16's speed.
void upload_block_fp8_as_bf16(std::initializer_list<LinearPart> parts, const std::string& what, CudaLinear& linear,
                              size_t& total_bytes) {
  std::vector<uint16_t> values;
  for (const LinearPart& p : parts) {
    if (p.weight->dtype != DType::F8_E4M3) {
      fail("{}: block-wise weight {} has dtype {}, expected F8_E4M3", what, p.weight->name,
           dtype_name(p.weight->dtype));
    }
    for (const float w : linear_to_f32(*p.weight, *p.scales)) values.push_back(float_to_bf16(w));
  }
  linear.weight = upload_vector(values, total_bytes);
  static std::once_flag logged;
  // stderr, not spdlog: spdlog's default sink is stdout, which carries generated text.
  std::call_once(logged, [] {
    fmt::print(stderr,
               "cuda backend: block-wise FP8 weights are dequantized to bf16 and run as bf16 layers (activations not "
               "quantized; no block-scaled FP8 GEMM yet, so bf16 speed and memory); the CPU backend computes the "
               "format exactly\n");
  });
}

// One fused linear layer from its parts (all quantized alike, or none), `what` naming it in errors.
CudaLinear upload_linear(std::initializer_list<LinearPart> parts, std::initializer_list<const TensorInfo*> biases,
                         const std::string& what, size_t& total_bytes) {
  CudaLinear linear;
  const LinearPart& first = *parts.begin();
  linear.in = int(first.weight->shape.at(1));
  for (const LinearPart& p : parts) linear.out += int(p.weight->shape.at(0));
  linear.bias = upload_optional(biases, total_bytes);
  const bool quantized = first.scales->quantized();
  const bool block_wise = first.scales->block_scale != nullptr;
  for (const LinearPart& p : parts) {
    if (p.scales->quantized() != quantized || (p.scales->block_scale != nullptr) != block_wise ||
        p.weight->dtype != first.weight->dtype) {
      fail("{}: the fused parts ({}, ...) must all be quantized alike (one is {}, another {})", what,
           first.weight->name, dtype_name(first.weight->dtype), dtype_name(p.weight->dtype));
    }
  }
  if (block_wise) {
    upload_block_fp8_as_bf16(parts, what, linear, total_bytes);
    return linear;
  }
  if (!quantized) {
    std::vector<const TensorInfo*> weights;
    for (const LinearPart& p : parts) weights.push_back(p.weight);
    // upload_concat takes an initializer_list; fused layers have two or three parts.
    if (weights.size() == 1) linear.weight = upload_concat({weights[0]}, total_bytes);
    if (weights.size() == 2) linear.weight = upload_concat({weights[0], weights[1]}, total_bytes);
    if (weights.size() == 3) linear.weight = upload_concat({weights[0], weights[1], weights[2]}, total_bytes);
    return linear;
  }
  if (linear.in % 16 != 0) {
    fail("{}: {} in_features {} is not a multiple of 16 (the quantized CUDA GEMMs need it)", what, first.weight->name,
         linear.in);
  }
  std::vector<QuantPart> quant_parts;
  for (const LinearPart& p : parts) {
    quant_parts.push_back({p.weight->data, int(p.weight->shape.at(0)), scale_values(*p.scales->weight_scale)});
  }
  if (first.weight->dtype == DType::I8) {
    linear.format = LinearFormat::Int8WeightOnly;
    std::vector<uint8_t> codes;
    for (const LinearPart& p : parts) codes.insert(codes.end(), p.weight->data, p.weight->data + p.weight->nbytes);
    linear.weight = upload_vector(codes, total_bytes);
    linear.weight_scale = upload_vector(fuse_channel_scales(quant_parts), total_bytes);
    linear.per_channel = true;
    return linear;
  }
  if (first.weight->dtype != DType::F8_E4M3) {
    fail("{}: quantized weight {} has dtype {}, expected F8_E4M3 or I8", what, first.weight->name,
         dtype_name(first.weight->dtype));
  }
  if (linear.out % 16 != 0) {
    fail("{}: out_features {} is not a multiple of 16 (cuBLASLt's FP8 GEMM needs it)", what, linear.out);
  }
  linear.format = LinearFormat::Fp8;
  FusedFp8 fused = fuse_fp8_parts(quant_parts, linear.in);
  linear.weight = upload_vector(fused.codes, total_bytes);
  linear.weight_scale = upload_vector(fused.scales, total_bytes);
  linear.per_channel = fused.per_channel;
  // Static activations: the fused GEMM reads one input, quantized with the largest of the parts' scales (vLLM's
  // choice for fused layers); qed quantize writes the same scale for every part of a fused input anyway.
  const bool static_input = first.scales->input_scale != nullptr;
  float input_scale = 0.0f;
  for (const LinearPart& p : parts) {
    if ((p.scales->input_scale != nullptr) != static_input) {
      fail("{}: the fused parts must all have an input_scale or none", what);
    }
    if (static_input) input_scale = std::max(input_scale, scalar_scale(*p.scales->input_scale));
  }
  if (static_input) linear.input_scale = upload_vector(std::vector<float>{input_scale}, total_bytes);
  return linear;
}

struct RandomFill {
  uint64_t seed;
  uint64_t next = 0;
  size_t* total_bytes;
  RandomWeightsDtype dtype = RandomWeightsDtype::Bf16;
  DeviceBuffer staging = {};  // bf16 values of an FP8 matrix before quantization

  DeviceBuffer matrix(size_t elements, float low, float high) {
    DeviceBuffer buffer(elements * sizeof(uint16_t));
    *total_bytes += buffer.bytes();
    fill_uniform_bf16(buffer.as<uint16_t>(), elements, seed * 0x100000001B3ull + next++, low, high, nullptr);
    return buffer;
  }

  // A linear layer of `dtype` with values of the bf16 one's distribution, uniform in [-a, a).
  CudaLinear linear(int out, int in, float a) {
    CudaLinear l;
    l.out = out;
    l.in = in;
    const size_t elements = size_t(out) * size_t(in);
    if (dtype == RandomWeightsDtype::Bf16) {
      l.weight = matrix(elements, -a, a);
      return l;
    }
    if (in % 16 != 0 || out % 16 != 0) {
      fail("random quantized weights need dimensions that are multiples of 16, got {}x{}", out, in);
    }
    l.weight = DeviceBuffer(elements);
    *total_bytes += elements;
    if (dtype == RandomWeightsDtype::Int8WeightOnly) {
      l.format = LinearFormat::Int8WeightOnly;
      fill_uniform_int8(l.weight.as<int8_t>(), elements, seed * 0x100000001B3ull + next++, nullptr);
      l.weight_scale = upload_vector(std::vector<float>(size_t(out), a / cpu::kInt8Max), *total_bytes);
      l.per_channel = true;
      return l;
    }
    l.format = LinearFormat::Fp8;
    if (staging.bytes() < elements * sizeof(uint16_t)) staging = DeviceBuffer(elements * sizeof(uint16_t));
    fill_uniform_bf16(staging.as<uint16_t>(), elements, seed * 0x100000001B3ull + next++, -a, a, nullptr);
    l.weight_scale = upload_vector(std::vector<float>{a / cpu::kFp8E4M3Max}, *total_bytes);
    quantize_fp8_bf16(staging.as<uint16_t>(), elements, l.weight_scale.as<float>(), l.weight.as<uint8_t>(), nullptr);
    // Normalised activations of unit-norm layers rarely exceed 8: a plausible calibrated scale.
    l.input_scale = upload_vector(std::vector<float>{8.0f / cpu::kFp8E4M3Max}, *total_bytes);
    return l;
  }
};

}  // namespace

RandomWeightsDtype parse_random_weights_dtype(const std::string& name) {
  if (name == "bf16") return RandomWeightsDtype::Bf16;
  if (name == "fp8") return RandomWeightsDtype::Fp8;
  if (name == "int8_wo") return RandomWeightsDtype::Int8WeightOnly;
  fail("--dtype must be bf16, fp8 or int8_wo, got '{}'", name);
}

bool CudaModelWeights::has_kv_cache_scales() const {
  return std::any_of(layers.begin(), layers.end(), [](const CudaLayerWeights& l) { return l.k_cache_scale > 0.0f; });
}

bool CudaModelWeights::has_format(LinearFormat format) const {
  for (const CudaLayerWeights& l : layers) {
    for (const CudaLinear* linear : {&l.qkv, &l.o_proj, &l.gate_up, &l.down_proj}) {
      if (linear->format == format) return true;
    }
  }
  return false;
}

CudaModelWeights CudaModelWeights::upload(const Checkpoint& checkpoint, const ModelConfig& config) {
  const ModelWeights w = ModelWeights::bind(checkpoint, config, /*allow_quantized=*/true);
  CudaModelWeights out;
  out.embed_tokens = upload_concat({w.embed_tokens}, out.bytes);
  if (!config.tie_word_embeddings) out.lm_head = upload_concat({w.lm_head}, out.bytes);
  out.final_norm = upload_concat({w.final_norm}, out.bytes);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string where = checkpoint.dir() + ": layer " + std::to_string(i);
    CudaLayerWeights layer;
    layer.input_norm = upload_concat({l.input_norm}, out.bytes);
    layer.post_attention_norm = upload_concat({l.post_attention_norm}, out.bytes);
    layer.qkv =
        upload_linear({{l.q_proj, &l.q_proj_scales}, {l.k_proj, &l.k_proj_scales}, {l.v_proj, &l.v_proj_scales}},
                      {l.q_bias, l.k_bias, l.v_bias}, where + " self_attn q/k/v", out.bytes);
    layer.o_proj = upload_linear({{l.o_proj, &l.o_proj_scales}}, {l.o_bias}, where + " self_attn.o_proj", out.bytes);
    layer.gate_up = upload_linear({{l.gate_proj, &l.gate_proj_scales}, {l.up_proj, &l.up_proj_scales}},
                                  {l.gate_bias, l.up_bias}, where + " mlp gate/up", out.bytes);
    layer.down_proj =
        upload_linear({{l.down_proj, &l.down_proj_scales}}, {l.down_bias}, where + " mlp.down_proj", out.bytes);
    if (l.k_cache_scale) {
      layer.k_cache_scale = scalar_scale(*l.k_cache_scale);
      layer.v_cache_scale = scalar_scale(*l.v_cache_scale);
    }
    out.layers.push_back(std::move(layer));
  }
  // Pageable-memory copies may still be in flight when cudaMemcpy returns; the forward runs on its own stream.
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  return out;
}

CudaModelWeights CudaModelWeights::random(const ModelConfig& config, uint64_t seed, RandomWeightsDtype dtype) {
  config.validate("random weights");
  CudaModelWeights out;
  RandomFill fill{seed, 0, &out.bytes, dtype};
  const int hidden = config.hidden_size;
  const int q_dim = config.num_heads * config.head_dim;
  const int kv_dim = config.num_kv_heads * config.head_dim;
  const int inter = config.intermediate_size;
  const float a = 0.02f * 1.7320508f;  // uniform [-a, a) has the standard deviation 0.02 of HF's init
  out.embed_tokens = fill.matrix(size_t(config.vocab_size) * size_t(hidden), -a, a);
  if (!config.tie_word_embeddings) out.lm_head = fill.matrix(size_t(config.vocab_size) * size_t(hidden), -a, a);
  out.final_norm = fill.matrix(size_t(hidden), 1.0f, 1.0f);
  for (int l = 0; l < config.num_layers; ++l) {
    CudaLayerWeights layer;
    layer.input_norm = fill.matrix(size_t(hidden), 1.0f, 1.0f);
    layer.post_attention_norm = fill.matrix(size_t(hidden), 1.0f, 1.0f);
    layer.qkv = fill.linear(q_dim + 2 * kv_dim, hidden, a);
    if (config.attention_bias) layer.qkv.bias = fill.matrix(size_t(q_dim + 2 * kv_dim), -a, a);
    layer.o_proj = fill.linear(hidden, q_dim, a);
    if (config.attention_bias && config.architecture == Architecture::Llama)
      layer.o_proj.bias = fill.matrix(size_t(hidden), -a, a);
    layer.gate_up = fill.linear(2 * inter, hidden, a);
    if (config.mlp_bias) layer.gate_up.bias = fill.matrix(size_t(2 * inter), -a, a);
    layer.down_proj = fill.linear(hidden, inter, a);
    if (config.mlp_bias) layer.down_proj.bias = fill.matrix(size_t(hidden), -a, a);
    out.layers.push_back(std::move(layer));
  }
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  return out;
}

}  // namespace qed::cuda
