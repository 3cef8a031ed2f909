#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/batch_checks.h"
#include "core/error.h"
#include "model/weights.h"

namespace qed {
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

int num_blocks_for(const ModelConfig& config, const CpuBackendOptions& options) {
  if (options.num_blocks > 0) return options.num_blocks;
  size_t bytes_per_block =
      size_t(2) * config.num_layers * options.block_size * config.num_kv_heads * config.head_dim * sizeof(float);
  size_t blocks = options.kv_cache_bytes / bytes_per_block;
  if (blocks == 0)
    fail("cpu backend: KV cache budget of {} bytes holds no block of {} bytes", options.kv_cache_bytes,
         bytes_per_block);
  return int(std::min<size_t>(blocks, size_t(1) << 30));
}

}  // namespace

CpuBackend::CpuBackend(const ModelConfig& config, const Checkpoint& checkpoint, const CpuBackendOptions& options)
    : config_(config), pool_(options.num_threads > 0 ? size_t(options.num_threads) : 0) {
  if (options.block_size <= 0) fail("cpu backend: block_size must be positive, got {}", options.block_size);
  // Quantized weights are dequantized once here (W = W_q * weight_scale, exact in fp32); activations and the KV
  // cache are quantized in the forward, so every number the CPU computes with is one the quantized format holds.
  const ModelWeights weights = ModelWeights::bind(checkpoint, config, /*allow_quantized=*/true);
  embed_tokens_ = tensor_to_f32(*weights.embed_tokens);
  if (!config.tie_word_embeddings) lm_head_ = tensor_to_f32(*weights.lm_head);
  final_norm_ = tensor_to_f32(*weights.final_norm);
  for (const LayerWeights& w : weights.layers) {
    Layer layer;
    layer.input_norm = tensor_to_f32(*w.input_norm);
    layer.post_attention_norm = tensor_to_f32(*w.post_attention_norm);
    layer.q_proj = linear_to_f32(*w.q_proj, w.q_proj_scales);
    layer.q_input = input_quant(w.q_proj_scales);
    layer.k_proj = linear_to_f32(*w.k_proj, w.k_proj_scales);
    layer.k_input = input_quant(w.k_proj_scales);
    layer.v_proj = linear_to_f32(*w.v_proj, w.v_proj_scales);
    layer.v_input = input_quant(w.v_proj_scales);
    layer.o_proj = linear_to_f32(*w.o_proj, w.o_proj_scales);
    layer.o_input = input_quant(w.o_proj_scales);
    layer.q_bias = optional_f32(w.q_bias);
    layer.k_bias = optional_f32(w.k_bias);
    layer.v_bias = optional_f32(w.v_bias);
    layer.o_bias = optional_f32(w.o_bias);
    layer.gate_up_proj =
        concat(linear_to_f32(*w.gate_proj, w.gate_proj_scales), linear_to_f32(*w.up_proj, w.up_proj_scales));
    // One GEMM for gate and up, as vLLM fuses them: it takes the larger of the two input scales.
    const InputQuant gate_input = input_quant(w.gate_proj_scales), up_input = input_quant(w.up_proj_scales);
    if (gate_input.scheme != up_input.scheme) {
      fail("{}: layer {}: mlp.gate_proj and mlp.up_proj must be quantized alike", checkpoint.dir(), layers_.size());
    }
    layer.gate_up_input = gate_input;
    layer.gate_up_input.scale = std::max(gate_input.scale, up_input.scale);
    if (w.gate_bias) layer.gate_up_bias = concat(tensor_to_f32(*w.gate_bias), tensor_to_f32(*w.up_bias));
    layer.down_proj = linear_to_f32(*w.down_proj, w.down_proj_scales);
    layer.down_input = input_quant(w.down_proj_scales);
    if (w.k_cache_scale) {
      layer.k_cache_scale = scalar_scale(*w.k_cache_scale);
      layer.v_cache_scale = scalar_scale(*w.v_cache_scale);
    }
    layer.down_bias = optional_f32(w.down_bias);
    layers_.push_back(std::move(layer));
  }
  inv_freq_.resize(size_t(config.head_dim / 2));
  cpu::rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling, inv_freq_.data());

  layout_.block_size = options.block_size;
  layout_.num_blocks = num_blocks_for(config, options);
  layer_cache_floats_ = size_t(layout_.num_blocks) * layout_.block_size * config.num_kv_heads * config.head_dim;
  // Uninitialised on purpose: slots are always written before they are read, and untouched pages cost nothing.
  k_cache_ = std::make_unique_for_overwrite<float[]>(layer_cache_floats_ * config.num_layers);
  v_cache_ = std::make_unique_for_overwrite<float[]>(layer_cache_floats_ * config.num_layers);
}

std::unique_ptr<CpuBackend> CpuBackend::load(const std::string& model_dir, const CpuBackendOptions& options) {
  ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  Checkpoint checkpoint = Checkpoint::open(model_dir);
  return std::make_unique<CpuBackend>(config, checkpoint, options);
}

CpuBackend::InputQuant CpuBackend::input_quant(const LinearScales& scales) const {
  if (config_.quantization.method != QuantMethod::Fp8 || !scales.weight_scale) return {};
  if (!scales.input_scale) return {ActivationScheme::Dynamic, 0.0f};
  return {ActivationScheme::Static, scalar_scale(*scales.input_scale)};
}

const float* CpuBackend::quantized_input(const InputQuant& quant, const float* x, size_t n,
                                         std::vector<float>& scratch) {
  if (quant.scheme == ActivationScheme::None) return x;
  float scale = quant.scale;
  if (quant.scheme == ActivationScheme::Dynamic) {
    const float a = cpu::amax(x, n);
    if (std::isnan(a)) fail("forward: NaN in a linear layer's input");
    scale = cpu::fp8_scale_for_amax(a);
  }
  scratch.resize(n);
  cpu::fake_quantize_fp8(x, n, scale, scratch.data());
  return scratch.data();
}

cpu::PagedKv CpuBackend::layer_cache(int layer) {
  return cpu::PagedKv{k_cache_.get() + layer * layer_cache_floats_, v_cache_.get() + layer * layer_cache_floats_,
                      layout_.block_size, config_.num_kv_heads, config_.head_dim};
}

void CpuBackend::validate(const ForwardBatch& batch) const {
  validate_forward_batch(batch, config_.vocab_size, layout_);
}

void CpuBackend::forward(const ForwardBatch& batch, ForwardResult& result) {
  validate(batch);
  const int hidden = config_.hidden_size;
  const int heads = config_.num_heads;
  const int head_dim = config_.head_dim;
  const int q_dim = heads * head_dim;
  const int kv_dim = config_.num_kv_heads * head_dim;
  const int inter = config_.intermediate_size;
  const int vocab = config_.vocab_size;
  const float eps = config_.rms_norm_eps;
  const float scale = 1.0f / std::sqrt(float(head_dim));

  // All sequences' new tokens form one row-major activation matrix; seq_begin[s] is sequence s's first row.
  std::vector<int32_t> ids, positions;
  std::vector<size_t> seq_begin;
  for (const SequenceChunk& seq : batch.sequences) {
    seq_begin.push_back(ids.size());
    ids.insert(ids.end(), seq.tokens.begin(), seq.tokens.end());
    for (size_t i = 0; i < seq.tokens.size(); ++i) {
      positions.push_back(seq.positions.empty() ? seq.num_cached + int32_t(i) : seq.positions[i]);
    }
  }
  const int rows = int(ids.size());

  std::vector<float> residual(size_t(rows) * hidden), normed(size_t(rows) * hidden),
      sublayer_out(size_t(rows) * hidden);
  std::vector<float> q(size_t(rows) * q_dim), k(size_t(rows) * kv_dim), v(size_t(rows) * kv_dim);
  std::vector<float> attn(size_t(rows) * q_dim);
  std::vector<float> gate_up(size_t(rows) * 2 * inter), act(size_t(rows) * inter);
  std::vector<float> scratch;  // FP8-quantized linear inputs (quantized checkpoints only)

  cpu::embedding(embed_tokens_.data(), ids.data(), residual.data(), rows, hidden);
  for (int l = 0; l < config_.num_layers; ++l) {
    const Layer& w = layers_[size_t(l)];
    if (l == 0) {
      cpu::rmsnorm(residual.data(), w.input_norm.data(), normed.data(), rows, hidden, eps);
    } else {
      cpu::add_rmsnorm(residual.data(), sublayer_out.data(), w.input_norm.data(), normed.data(), rows, hidden, eps);
    }
    const size_t hidden_floats = size_t(rows) * hidden;
    if (observer_) observer_->linear_input(l, LinearInput::Qkv, normed.data(), hidden_floats);
    cpu::matmul(quantized_input(w.q_input, normed.data(), hidden_floats, scratch), w.q_proj.data(), or_null(w.q_bias),
                q.data(), rows, hidden, q_dim, &pool_);
    cpu::matmul(quantized_input(w.k_input, normed.data(), hidden_floats, scratch), w.k_proj.data(), or_null(w.k_bias),
                k.data(), rows, hidden, kv_dim, &pool_);
    cpu::matmul(quantized_input(w.v_input, normed.data(), hidden_floats, scratch), w.v_proj.data(), or_null(w.v_bias),
                v.data(), rows, hidden, kv_dim, &pool_);
    cpu::rope(q.data(), positions.data(), inv_freq_.data(), rows, heads, head_dim);
    cpu::rope(k.data(), positions.data(), inv_freq_.data(), rows, config_.num_kv_heads, head_dim);
    if (observer_) observer_->kv_written(l, k.data(), v.data(), size_t(rows) * kv_dim);
    if (w.k_cache_scale > 0.0f) {
      // An FP8 KV cache stores saturate(K / k_scale) as E4M3; attention reads it back times k_scale (vLLM's
      // convention). The fp32 cache holds those dequantized values, the same numbers.
      cpu::fake_quantize_fp8(k.data(), size_t(rows) * kv_dim, w.k_cache_scale, k.data());
      cpu::fake_quantize_fp8(v.data(), size_t(rows) * kv_dim, w.v_cache_scale, v.data());
    }

    const cpu::PagedKv cache = layer_cache(l);
    for (size_t s = 0; s < batch.sequences.size(); ++s) {
      const SequenceChunk& seq = batch.sequences[s];
      const size_t begin = seq_begin[s];
      const int n = int(seq.tokens.size());
      cpu::write_kv(cache, seq.block_table.data(), seq.num_cached, k.data() + begin * kv_dim, v.data() + begin * kv_dim,
                    n);
      cpu::attention(q.data() + begin * q_dim, cache, seq.block_table.data(), seq.num_cached, n, heads,
                     seq.attention_mask.empty() ? nullptr : seq.attention_mask.data(), scale,
                     attn.data() + begin * q_dim, &pool_);
    }
    if (observer_) observer_->linear_input(l, LinearInput::O, attn.data(), size_t(rows) * q_dim);
    cpu::matmul(quantized_input(w.o_input, attn.data(), size_t(rows) * q_dim, scratch), w.o_proj.data(),
                or_null(w.o_bias), sublayer_out.data(), rows, q_dim, hidden, &pool_);
    cpu::add_rmsnorm(residual.data(), sublayer_out.data(), w.post_attention_norm.data(), normed.data(), rows, hidden,
                     eps);
    if (observer_) observer_->linear_input(l, LinearInput::GateUp, normed.data(), hidden_floats);
    cpu::matmul(quantized_input(w.gate_up_input, normed.data(), hidden_floats, scratch), w.gate_up_proj.data(),
                or_null(w.gate_up_bias), gate_up.data(), rows, hidden, 2 * inter, &pool_);
    cpu::silu_and_mul(gate_up.data(), act.data(), rows, inter);
    if (observer_) observer_->linear_input(l, LinearInput::Down, act.data(), size_t(rows) * inter);
    cpu::matmul(quantized_input(w.down_input, act.data(), size_t(rows) * inter, scratch), w.down_proj.data(),
                or_null(w.down_bias), sublayer_out.data(), rows, inter, hidden, &pool_);
  }
  for (size_t i = 0; i < residual.size(); ++i) residual[i] += sublayer_out[i];

  // Only the wanted rows go through the final norm and the (large) lm_head.
  std::vector<float> selected;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const SequenceChunk& seq = batch.sequences[s];
    auto take = [&](size_t index) {
      const float* row = residual.data() + (seq_begin[s] + index) * hidden;
      selected.insert(selected.end(), row, row + hidden);
    };
    if (seq.logits_indices.empty()) {
      take(seq.tokens.size() - 1);
    } else {
      for (int32_t index : seq.logits_indices) take(size_t(index));
    }
  }
  result.rows = int(selected.size() / size_t(hidden));
  std::vector<float> final_hidden(selected.size());
  cpu::rmsnorm(selected.data(), final_norm_.data(), final_hidden.data(), result.rows, hidden, eps);
  result.logits.resize(size_t(result.rows) * vocab);
  const std::vector<float>& lm_head = config_.tie_word_embeddings ? embed_tokens_ : lm_head_;
  cpu::matmul(final_hidden.data(), lm_head.data(), nullptr, result.logits.data(), result.rows, hidden, vocab, &pool_);
  if (batch.want_hidden) {
    result.hidden = std::move(final_hidden);
  } else {
    result.hidden.clear();
  }
}

void CpuBackend::copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) {
  validate_block_pairs(src_dst, layout_.num_blocks);
  const size_t block_floats = size_t(layout_.block_size) * config_.num_kv_heads * config_.head_dim;
  for (int l = 0; l < config_.num_layers; ++l) {
    const cpu::PagedKv cache = layer_cache(l);
    for (const auto& [src, dst] : src_dst) {
      if (src == dst) continue;
      std::memcpy(cache.k + size_t(dst) * block_floats, cache.k + size_t(src) * block_floats,
                  block_floats * sizeof(float));
      std::memcpy(cache.v + size_t(dst) * block_floats, cache.v + size_t(src) * block_floats,
                  block_floats * sizeof(float));
    }
  }
}

}  // namespace qed
