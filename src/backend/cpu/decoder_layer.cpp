#include "backend/cpu/decoder_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/quant_ops.h"
#include "core/error.h"

namespace qed::cpu {
namespace {

std::vector<float> optional_f32(const TensorInfo* tensor) {
  return tensor ? tensor_to_f32(*tensor) : std::vector<float>{};
}

std::vector<float> concat(std::vector<float> a, const std::vector<float>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

const float* or_null(const std::vector<float>& v) {
  return v.empty() ? nullptr : v.data();
}

InputQuant input_quant(const ModelConfig& config, const LinearScales& scales) {
  if (config.quantization.method != QuantMethod::Fp8 || !scales.quantized()) return {};
  if (scales.block_scale) return {ActivationScheme::Dynamic, 0.0f, scales.block_in};
  if (!scales.input_scale) return {ActivationScheme::Dynamic, 0.0f};
  return {ActivationScheme::Static, scalar_scale(*scales.input_scale)};
}

}  // namespace

DenseLayer load_dense_layer(const LayerWeights& w, const ModelConfig& config, const std::string& where, int layer) {
  DenseLayer d;
  d.q_proj = linear_to_f32(*w.q_proj, w.q_proj_scales);
  d.q_input = input_quant(config, w.q_proj_scales);
  d.k_proj = linear_to_f32(*w.k_proj, w.k_proj_scales);
  d.k_input = input_quant(config, w.k_proj_scales);
  d.v_proj = linear_to_f32(*w.v_proj, w.v_proj_scales);
  d.v_input = input_quant(config, w.v_proj_scales);
  d.o_proj = linear_to_f32(*w.o_proj, w.o_proj_scales);
  d.o_input = input_quant(config, w.o_proj_scales);
  d.q_bias = optional_f32(w.q_bias);
  d.k_bias = optional_f32(w.k_bias);
  d.v_bias = optional_f32(w.v_bias);
  d.o_bias = optional_f32(w.o_bias);
  d.gate_up_proj = concat(linear_to_f32(*w.gate_proj, w.gate_proj_scales), linear_to_f32(*w.up_proj, w.up_proj_scales));
  // One GEMM for gate and up, as vLLM fuses them: it takes the larger of the two input scales.
  const InputQuant gate_input = input_quant(config, w.gate_proj_scales);
  const InputQuant up_input = input_quant(config, w.up_proj_scales);
  if (gate_input.scheme != up_input.scheme || gate_input.group != up_input.group) {
    fail("{}: layer {}: mlp.gate_proj and mlp.up_proj must be quantized alike", where, layer);
  }
  d.gate_up_input = gate_input;
  d.gate_up_input.scale = std::max(gate_input.scale, up_input.scale);
  if (w.gate_bias) d.gate_up_bias = concat(tensor_to_f32(*w.gate_bias), tensor_to_f32(*w.up_bias));
  d.down_proj = linear_to_f32(*w.down_proj, w.down_proj_scales);
  d.down_input = input_quant(config, w.down_proj_scales);
  d.down_bias = optional_f32(w.down_bias);
  if (w.k_cache_scale) {
    d.k_cache_scale = scalar_scale(*w.k_cache_scale);
    d.v_cache_scale = scalar_scale(*w.v_cache_scale);
  }
  return d;
}

const float* quantized_input(const InputQuant& quant, const float* x, size_t n, std::vector<float>& scratch) {
  if (quant.scheme == ActivationScheme::None) return x;
  if (quant.group > 0) {
    // Rows are whole groups (in_features % group == 0, checked at load), so the (token, group) pairs are the
    // consecutive runs of `group` floats of the row-major input.
    scratch.resize(n);
    if (!fake_quantize_fp8_per_group(x, n, size_t(quant.group), scratch.data())) {
      fail("forward: NaN in a linear layer's input");
    }
    return scratch.data();
  }
  float scale = quant.scale;
  if (quant.scheme == ActivationScheme::Dynamic) {
    const float a = amax(x, n);
    if (std::isnan(a)) fail("forward: NaN in a linear layer's input");
    scale = fp8_scale_for_amax(a);
  }
  scratch.resize(n);
  fake_quantize_fp8(x, n, scale, scratch.data());
  return scratch.data();
}

FlatBatch flatten(const ForwardBatch& batch) {
  FlatBatch flat;
  for (const SequenceChunk& seq : batch.sequences) {
    flat.seq_begin.push_back(flat.ids.size());
    flat.ids.insert(flat.ids.end(), seq.tokens.begin(), seq.tokens.end());
    for (size_t i = 0; i < seq.tokens.size(); ++i) {
      flat.positions.push_back(seq.positions.empty() ? seq.num_cached + int32_t(i) : seq.positions[i]);
    }
  }
  return flat;
}

void attention_sublayer(const DenseLayer& w, HeadCounts h, const ForwardBatch& batch, const FlatBatch& flat,
                        const float* normed, int hidden, const float* inv_freq, const PagedKv& cache,
                        SublayerScratch& s, float* out, ThreadPool* pool, ForwardObserver* observer, int layer) {
  const int rows = flat.rows();
  const int q_dim = h.heads * h.head_dim, kv_dim = h.kv_heads * h.head_dim;
  const size_t hidden_floats = size_t(rows) * hidden;
  s.q.resize(size_t(rows) * q_dim);
  s.k.resize(size_t(rows) * kv_dim);
  s.v.resize(size_t(rows) * kv_dim);
  s.attn.resize(size_t(rows) * q_dim);
  if (observer) observer->linear_input(layer, LinearInput::Qkv, normed, hidden_floats);
  matmul(quantized_input(w.q_input, normed, hidden_floats, s.quantized), w.q_proj.data(), or_null(w.q_bias), s.q.data(),
         rows, hidden, q_dim, pool);
  matmul(quantized_input(w.k_input, normed, hidden_floats, s.quantized), w.k_proj.data(), or_null(w.k_bias), s.k.data(),
         rows, hidden, kv_dim, pool);
  matmul(quantized_input(w.v_input, normed, hidden_floats, s.quantized), w.v_proj.data(), or_null(w.v_bias), s.v.data(),
         rows, hidden, kv_dim, pool);
  rope(s.q.data(), flat.positions.data(), inv_freq, rows, h.heads, h.head_dim);
  rope(s.k.data(), flat.positions.data(), inv_freq, rows, h.kv_heads, h.head_dim);
  if (observer) observer->kv_written(layer, s.k.data(), s.v.data(), size_t(rows) * kv_dim);
  if (w.k_cache_scale > 0.0f) {
    // An FP8 KV cache stores saturate(K / k_scale) as E4M3; attention reads it back times k_scale (vLLM's
    // convention). The fp32 cache holds those dequantized values, the same numbers.
    fake_quantize_fp8(s.k.data(), size_t(rows) * kv_dim, w.k_cache_scale, s.k.data());
    fake_quantize_fp8(s.v.data(), size_t(rows) * kv_dim, w.v_cache_scale, s.v.data());
  }
  const float scale = 1.0f / std::sqrt(float(h.head_dim));
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const SequenceChunk& seq = batch.sequences[i];
    const size_t begin = flat.seq_begin[i];
    const int n = int(seq.tokens.size());
    write_kv(cache, seq.block_table.data(), seq.num_cached, s.k.data() + begin * kv_dim, s.v.data() + begin * kv_dim,
             n);
    attention(s.q.data() + begin * q_dim, cache, seq.block_table.data(), seq.num_cached, n, h.heads,
              seq.attention_mask.empty() ? nullptr : seq.attention_mask.data(), scale, s.attn.data() + begin * q_dim,
              pool);
  }
  if (observer) observer->linear_input(layer, LinearInput::O, s.attn.data(), size_t(rows) * q_dim);
  matmul(quantized_input(w.o_input, s.attn.data(), size_t(rows) * q_dim, s.quantized), w.o_proj.data(),
         or_null(w.o_bias), out, rows, q_dim, hidden, pool);
}

void mlp_sublayer(const DenseLayer& w, int inter, const float* normed, int rows, int hidden, SublayerScratch& s,
                  float* out, ThreadPool* pool, ForwardObserver* observer, int layer) {
  const size_t hidden_floats = size_t(rows) * hidden;
  s.gate_up.resize(size_t(rows) * 2 * inter);
  s.act.resize(size_t(rows) * inter);
  if (observer) observer->linear_input(layer, LinearInput::GateUp, normed, hidden_floats);
  matmul(quantized_input(w.gate_up_input, normed, hidden_floats, s.quantized), w.gate_up_proj.data(),
         or_null(w.gate_up_bias), s.gate_up.data(), rows, hidden, 2 * inter, pool);
  silu_and_mul(s.gate_up.data(), s.act.data(), rows, inter);
  if (observer) observer->linear_input(layer, LinearInput::Down, s.act.data(), size_t(rows) * inter);
  matmul(quantized_input(w.down_input, s.act.data(), size_t(rows) * inter, s.quantized), w.down_proj.data(),
         or_null(w.down_bias), out, rows, inter, hidden, pool);
}

std::vector<float> wanted_rows(const ForwardBatch& batch, const FlatBatch& flat, const float* residual, int hidden) {
  std::vector<float> selected;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const SequenceChunk& seq = batch.sequences[s];
    auto take = [&](size_t index) {
      const float* row = residual + (flat.seq_begin[s] + index) * hidden;
      selected.insert(selected.end(), row, row + hidden);
    };
    if (seq.logits_indices.empty()) {
      take(seq.tokens.size() - 1);
    } else {
      for (int32_t index : seq.logits_indices) take(size_t(index));
    }
  }
  return selected;
}

void copy_kv_blocks(const PagedKv& cache, size_t block_floats, std::span<const std::pair<int32_t, int32_t>> src_dst) {
  for (const auto& [src, dst] : src_dst) {
    if (src == dst) continue;
    std::memcpy(cache.k + size_t(dst) * block_floats, cache.k + size_t(src) * block_floats,
                block_floats * sizeof(float));
    std::memcpy(cache.v + size_t(dst) * block_floats, cache.v + size_t(src) * block_floats,
                block_floats * sizeof(float));
  }
}

}  // namespace qed::cpu
