#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/batch_checks.h"
#include "core/error.h"
#include "model/weights.h"

namespace qed {
namespace {

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
  // Quantized weights are dequantized once, in load_dense_layer.
  const ModelWeights weights = ModelWeights::bind(checkpoint, config, /*allow_quantized=*/true);
  embed_tokens_ = tensor_to_f32(*weights.embed_tokens);
  if (!config.tie_word_embeddings) lm_head_ = tensor_to_f32(*weights.lm_head);
  final_norm_ = tensor_to_f32(*weights.final_norm);
  for (const LayerWeights& w : weights.layers) {
    Layer layer;
    layer.input_norm = tensor_to_f32(*w.input_norm);
    layer.post_attention_norm = tensor_to_f32(*w.post_attention_norm);
    layer.dense = cpu::load_dense_layer(w, config, checkpoint.dir(), int(layers_.size()));
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
  const int vocab = config_.vocab_size;
  const float eps = config_.rms_norm_eps;
  const cpu::HeadCounts heads{config_.num_heads, config_.num_kv_heads, config_.head_dim};

  const cpu::FlatBatch flat = cpu::flatten(batch);
  const int rows = flat.rows();
  std::vector<float> residual(size_t(rows) * hidden), normed(size_t(rows) * hidden),
      sublayer_out(size_t(rows) * hidden);
  cpu::SublayerScratch scratch;

  cpu::embedding(embed_tokens_.data(), flat.ids.data(), residual.data(), rows, hidden);
  for (int l = 0; l < config_.num_layers; ++l) {
    const Layer& w = layers_[size_t(l)];
    if (l == 0) {
      cpu::rmsnorm(residual.data(), w.input_norm.data(), normed.data(), rows, hidden, eps);
    } else {
      cpu::add_rmsnorm(residual.data(), sublayer_out.data(), w.input_norm.data(), normed.data(), rows, hidden, eps);
    }
    cpu::attention_sublayer(w.dense, heads, batch, flat, normed.data(), hidden, inv_freq_.data(), layer_cache(l),
                            scratch, sublayer_out.data(), &pool_, observer_, l);
    cpu::add_rmsnorm(residual.data(), sublayer_out.data(), w.post_attention_norm.data(), normed.data(), rows, hidden,
                     eps);
    cpu::mlp_sublayer(w.dense, config_.intermediate_size, normed.data(), rows, hidden, scratch, sublayer_out.data(),
                      &pool_, observer_, l);
  }
  for (size_t i = 0; i < residual.size(); ++i) residual[i] += sublayer_out[i];

  // Only the wanted rows go through the final norm and the (large) lm_head.
  const std::vector<float> selected = cpu::wanted_rows(batch, flat, residual.data(), hidden);
  result.rows = int(selected.size() / size_t(hidden));
  std::vector<float> final_hidden(selected.size());
  cpu::rmsnorm(selected.data(), final_norm_.data(), final_hidden.data(), result.rows, hidden, eps);
  if (batch.skip_logits) {
    result.logits.clear();  // this backend samples on the host: no logits are wanted at all
  } else {
    result.logits.resize(size_t(result.rows) * vocab);
    const std::vector<float>& lm_head = config_.tie_word_embeddings ? embed_tokens_ : lm_head_;
    cpu::matmul(final_hidden.data(), lm_head.data(), nullptr, result.logits.data(), result.rows, hidden, vocab, &pool_);
  }
  if (batch.want_hidden) {
    result.hidden = std::move(final_hidden);
  } else {
    result.hidden.clear();
  }
}

void CpuBackend::copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) {
  validate_block_pairs(src_dst, layout_.num_blocks);
  const size_t block_floats = size_t(layout_.block_size) * config_.num_kv_heads * config_.head_dim;
  for (int l = 0; l < config_.num_layers; ++l) cpu::copy_kv_blocks(layer_cache(l), block_floats, src_dst);
}

}  // namespace qed
