#include "backend/tp/tp_cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/batch_checks.h"
#include "backend/cpu/quant_ops.h"
#include "core/error.h"
#include "model/weights.h"

namespace qed::tp {
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

// out += x, elementwise: one step of the rank-ordered all-reduce.
void accumulate(std::vector<float>& out, const std::vector<float>& x, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] += x[i];
}

}  // namespace

TpSimulatedCpuBackend::TpSimulatedCpuBackend(const ModelConfig& config, const Checkpoint& checkpoint, int ranks,
                                             const CpuBackendOptions& options)
    : config_(config),
      plan_(ShardPlan::make(config, ranks)),
      pool_(options.num_threads > 0 ? size_t(options.num_threads) : 0) {
  if (options.block_size <= 0) fail("cpu backend: block_size must be positive, got {}", options.block_size);
  // The replicated tensors once, from the unsharded binding (which also checks the checkpoint as CpuBackend does).
  const ModelWeights whole = ModelWeights::bind(checkpoint, config, /*allow_quantized=*/true);
  embed_tokens_ = tensor_to_f32(*whole.embed_tokens);
  final_norm_ = tensor_to_f32(*whole.final_norm);
  for (const LayerWeights& w : whole.layers) {
    input_norms_.push_back(tensor_to_f32(*w.input_norm));
    post_attention_norms_.push_back(tensor_to_f32(*w.post_attention_norm));
  }
  for (int r = 0; r < ranks; ++r) ranks_.push_back(load_rank(checkpoint, r));

  inv_freq_.resize(size_t(config.head_dim / 2));
  cpu::rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling, inv_freq_.data());

  layout_.block_size = options.block_size;
  if (options.num_blocks > 0) {
    layout_.num_blocks = options.num_blocks;
  } else {
    // The budget covers all ranks' caches together (each holds its KV heads; replicated heads count per rank).
    size_t bytes_per_block = 0;
    for (const Rank& rank : ranks_) {
      bytes_per_block +=
          size_t(2) * config.num_layers * options.block_size * rank.config.num_kv_heads * config.head_dim * 4;
    }
    const size_t blocks = options.kv_cache_bytes / bytes_per_block;
    if (blocks == 0)
      fail("cpu backend: KV cache budget of {} bytes holds no block of {} bytes", options.kv_cache_bytes,
           bytes_per_block);
    layout_.num_blocks = int(std::min<size_t>(blocks, size_t(1) << 30));
  }
  for (Rank& rank : ranks_) {
    rank.layer_cache_floats =
        size_t(layout_.num_blocks) * layout_.block_size * rank.config.num_kv_heads * config.head_dim;
    // Uninitialised on purpose, as CpuBackend's: slots are written before they are read.
    rank.k_cache = std::make_unique_for_overwrite<float[]>(rank.layer_cache_floats * config.num_layers);
    rank.v_cache = std::make_unique_for_overwrite<float[]>(rank.layer_cache_floats * config.num_layers);
  }
}

std::unique_ptr<TpSimulatedCpuBackend> TpSimulatedCpuBackend::load(const std::string& model_dir, int ranks,
                                                                   const CpuBackendOptions& options) {
  ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  Checkpoint checkpoint = Checkpoint::open(model_dir);
  return std::make_unique<TpSimulatedCpuBackend>(config, checkpoint, ranks, options);
}

TpSimulatedCpuBackend::Rank TpSimulatedCpuBackend::load_rank(const Checkpoint& checkpoint, int r) const {
  const RankShard shard = make_rank_shard(checkpoint, config_, plan_, r);
  // The rank's shard binds as a model of its own shape: every slice is checked against the rank's config here.
  const ModelWeights weights = ModelWeights::bind(shard.checkpoint, shard.config, /*allow_quantized=*/true);
  Rank rank;
  rank.config = shard.config;
  for (const LayerWeights& w : weights.layers) {
    Layer layer;
    layer.q_proj = linear_to_f32(*w.q_proj, w.q_proj_scales);
    layer.k_proj = linear_to_f32(*w.k_proj, w.k_proj_scales);
    layer.v_proj = linear_to_f32(*w.v_proj, w.v_proj_scales);
    layer.o_proj = linear_to_f32(*w.o_proj, w.o_proj_scales);
    layer.q_input = input_quant(w.q_proj_scales);
    layer.k_input = input_quant(w.k_proj_scales);
    layer.v_input = input_quant(w.v_proj_scales);
    layer.o_input = input_quant(w.o_proj_scales);
    layer.q_bias = optional_f32(w.q_bias);
    layer.k_bias = optional_f32(w.k_bias);
    layer.v_bias = optional_f32(w.v_bias);
    layer.o_bias = optional_f32(w.o_bias);
    layer.gate_up_proj =
        concat(linear_to_f32(*w.gate_proj, w.gate_proj_scales), linear_to_f32(*w.up_proj, w.up_proj_scales));
    const InputQuant gate_input = input_quant(w.gate_proj_scales), up_input = input_quant(w.up_proj_scales);
    if (gate_input.scheme != up_input.scheme) {
      fail("{}: mlp.gate_proj and mlp.up_proj must be quantized alike", checkpoint.dir());
    }
    layer.gate_up_input = gate_input;
    layer.gate_up_input.scale = std::max(gate_input.scale, up_input.scale);
    if (w.gate_bias) layer.gate_up_bias = concat(tensor_to_f32(*w.gate_bias), tensor_to_f32(*w.up_bias));
    layer.down_proj = linear_to_f32(*w.down_proj, w.down_proj_scales);
    layer.down_input = input_quant(w.down_proj_scales);
    layer.down_bias = optional_f32(w.down_bias);
    if (w.k_cache_scale) {
      layer.k_cache_scale = scalar_scale(*w.k_cache_scale);
      layer.v_cache_scale = scalar_scale(*w.v_cache_scale);
    }
    rank.layers.push_back(std::move(layer));
  }
  rank.lm_head = tensor_to_f32(shard.checkpoint.get(kLmHeadShardName));
  return rank;
}

TpSimulatedCpuBackend::InputQuant TpSimulatedCpuBackend::input_quant(const LinearScales& scales) const {
  if (config_.quantization.method != QuantMethod::Fp8 || !scales.weight_scale) return {};
  if (!scales.input_scale) return {ActivationScheme::Dynamic, 0.0f};
  return {ActivationScheme::Static, scalar_scale(*scales.input_scale)};
}

// A dynamic scale is the amax of the rank's own input: for the row-parallel o_proj/down_proj that is the rank's
// slice of the activations, as in vLLM (the ranks do not agree on one scale), so dynamic FP8 under TP is not the
// unsharded computation. Static scales are replicated and are.
const float* TpSimulatedCpuBackend::quantized_input(const InputQuant& quant, const float* x, size_t n,
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

cpu::PagedKv TpSimulatedCpuBackend::Rank::layer_cache(int layer, int block_size) const {
  return cpu::PagedKv{k_cache.get() + size_t(layer) * layer_cache_floats,
                      v_cache.get() + size_t(layer) * layer_cache_floats, block_size, config.num_kv_heads,
                      config.head_dim};
}

void TpSimulatedCpuBackend::forward(const ForwardBatch& batch, ForwardResult& result) {
  validate_forward_batch(batch, config_.vocab_size, layout_);
  const int hidden = config_.hidden_size;
  const int head_dim = config_.head_dim;
  const int vocab = config_.vocab_size;
  const float eps = config_.rms_norm_eps;
  const float scale = 1.0f / std::sqrt(float(head_dim));

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
  const size_t hidden_floats = size_t(rows) * hidden;

  // Replicated activations (every rank holds the same residual stream) and one rank's partial results at a time.
  std::vector<float> residual(hidden_floats), normed(hidden_floats), reduced(hidden_floats), partial(hidden_floats);
  std::vector<float> q, k, v, attn, gate_up, act, scratch;
  // The all-reduce of the ranks' partial sums, in rank order: rank 0's partial, plus rank 1's, ...
  auto reduce = [&](int r) {
    if (r == 0) {
      reduced.swap(partial);
    } else {
      accumulate(reduced, partial, hidden_floats);
    }
  };

  cpu::embedding(embed_tokens_.data(), ids.data(), residual.data(), rows, hidden);
  for (int l = 0; l < config_.num_layers; ++l) {
    if (l == 0) {
      cpu::rmsnorm(residual.data(), input_norms_[0].data(), normed.data(), rows, hidden, eps);
    } else {
      cpu::add_rmsnorm(residual.data(), reduced.data(), input_norms_[size_t(l)].data(), normed.data(), rows, hidden,
                       eps);
    }
    for (int r = 0; r < plan_.ranks; ++r) {
      Rank& rank = ranks_[size_t(r)];
      const Layer& w = rank.layers[size_t(l)];
      const int heads = rank.config.num_heads, kv_heads = rank.config.num_kv_heads;
      const int q_dim = heads * head_dim, kv_dim = kv_heads * head_dim;
      q.resize(size_t(rows) * q_dim);
      k.resize(size_t(rows) * kv_dim);
      v.resize(size_t(rows) * kv_dim);
      attn.resize(size_t(rows) * q_dim);
      cpu::matmul(quantized_input(w.q_input, normed.data(), hidden_floats, scratch), w.q_proj.data(), or_null(w.q_bias),
                  q.data(), rows, hidden, q_dim, &pool_);
      cpu::matmul(quantized_input(w.k_input, normed.data(), hidden_floats, scratch), w.k_proj.data(), or_null(w.k_bias),
                  k.data(), rows, hidden, kv_dim, &pool_);
      cpu::matmul(quantized_input(w.v_input, normed.data(), hidden_floats, scratch), w.v_proj.data(), or_null(w.v_bias),
                  v.data(), rows, hidden, kv_dim, &pool_);
      cpu::rope(q.data(), positions.data(), inv_freq_.data(), rows, heads, head_dim);
      cpu::rope(k.data(), positions.data(), inv_freq_.data(), rows, kv_heads, head_dim);
      if (w.k_cache_scale > 0.0f) {
        cpu::fake_quantize_fp8(k.data(), size_t(rows) * kv_dim, w.k_cache_scale, k.data());
        cpu::fake_quantize_fp8(v.data(), size_t(rows) * kv_dim, w.v_cache_scale, v.data());
      }
      const cpu::PagedKv cache = rank.layer_cache(l, layout_.block_size);
      for (size_t s = 0; s < batch.sequences.size(); ++s) {
        const SequenceChunk& seq = batch.sequences[s];
        const size_t begin = seq_begin[s];
        const int n = int(seq.tokens.size());
        cpu::write_kv(cache, seq.block_table.data(), seq.num_cached, k.data() + begin * kv_dim,
                      v.data() + begin * kv_dim, n);
        cpu::attention(q.data() + begin * q_dim, cache, seq.block_table.data(), seq.num_cached, n, heads,
                       seq.attention_mask.empty() ? nullptr : seq.attention_mask.data(), scale,
                       attn.data() + begin * q_dim, &pool_);
      }
      partial.resize(hidden_floats);
      cpu::matmul(quantized_input(w.o_input, attn.data(), size_t(rows) * q_dim, scratch), w.o_proj.data(),
                  or_null(w.o_bias), partial.data(), rows, q_dim, hidden, &pool_);
      reduce(r);
    }
    cpu::add_rmsnorm(residual.data(), reduced.data(), post_attention_norms_[size_t(l)].data(), normed.data(), rows,
                     hidden, eps);
    for (int r = 0; r < plan_.ranks; ++r) {
      const Rank& rank = ranks_[size_t(r)];
      const Layer& w = rank.layers[size_t(l)];
      const int inter = rank.config.intermediate_size;
      gate_up.resize(size_t(rows) * 2 * inter);
      act.resize(size_t(rows) * inter);
      cpu::matmul(quantized_input(w.gate_up_input, normed.data(), hidden_floats, scratch), w.gate_up_proj.data(),
                  or_null(w.gate_up_bias), gate_up.data(), rows, hidden, 2 * inter, &pool_);
      cpu::silu_and_mul(gate_up.data(), act.data(), rows, inter);
      partial.resize(hidden_floats);
      cpu::matmul(quantized_input(w.down_input, act.data(), size_t(rows) * inter, scratch), w.down_proj.data(),
                  or_null(w.down_bias), partial.data(), rows, inter, hidden, &pool_);
      reduce(r);
    }
  }
  for (size_t i = 0; i < residual.size(); ++i) residual[i] += reduced[i];

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
  // Vocab-parallel lm_head: each rank's vocab_shard columns, then the gather (rank r's real columns land at
  // [vocab_begin, vocab_begin + vocab) of every row; the padding columns are dropped).
  result.logits.assign(size_t(result.rows) * vocab, 0.0f);
  const int shard = plan_.vocab_shard;
  std::vector<float> part(size_t(result.rows) * shard);
  for (int r = 0; r < plan_.ranks; ++r) {
    const RankSlice& s = plan_.slices[size_t(r)];
    if (s.vocab == 0) continue;
    cpu::matmul(final_hidden.data(), ranks_[size_t(r)].lm_head.data(), nullptr, part.data(), result.rows, hidden, shard,
                &pool_);
    for (int row = 0; row < result.rows; ++row) {
      std::memcpy(result.logits.data() + size_t(row) * vocab + s.vocab_begin, part.data() + size_t(row) * shard,
                  size_t(s.vocab) * sizeof(float));
    }
  }
  if (batch.want_hidden) {
    result.hidden = std::move(final_hidden);
  } else {
    result.hidden.clear();
  }
}

void TpSimulatedCpuBackend::copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) {
  validate_block_pairs(src_dst, layout_.num_blocks);
  for (const Rank& rank : ranks_) {
    const size_t block_floats = size_t(layout_.block_size) * rank.config.num_kv_heads * config_.head_dim;
    for (int l = 0; l < config_.num_layers; ++l) {
      const cpu::PagedKv cache = rank.layer_cache(l, layout_.block_size);
      for (const auto& [src, dst] : src_dst) {
        if (src == dst) continue;
        std::memcpy(cache.k + size_t(dst) * block_floats, cache.k + size_t(src) * block_floats,
                    block_floats * sizeof(float));
        std::memcpy(cache.v + size_t(dst) * block_floats, cache.v + size_t(src) * block_floats,
                    block_floats * sizeof(float));
      }
    }
  }
}

}  // namespace qed::tp
