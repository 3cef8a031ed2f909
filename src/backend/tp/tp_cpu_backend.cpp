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
    rank.layers.push_back(cpu::load_dense_layer(w, shard.config, checkpoint.dir(), int(rank.layers.size())));
  }
  rank.lm_head = tensor_to_f32(shard.checkpoint.get(kLmHeadShardName));
  return rank;
}

// A dynamic FP8 scale (cpu::quantized_input) is the amax of the rank's own input: for the row-parallel
// o_proj/down_proj that is the rank's slice of the activations, as in vLLM (the ranks do not agree on one scale), so
// dynamic FP8 under TP is not the unsharded computation. Static scales are replicated and are.

cpu::PagedKv TpSimulatedCpuBackend::Rank::layer_cache(int layer, int block_size) const {
  return cpu::PagedKv{k_cache.get() + size_t(layer) * layer_cache_floats,
                      v_cache.get() + size_t(layer) * layer_cache_floats, block_size, config.num_kv_heads,
                      config.head_dim};
}

void TpSimulatedCpuBackend::forward(const ForwardBatch& batch, ForwardResult& result) {
  validate_forward_batch(batch, config_.vocab_size, layout_);
  const int hidden = config_.hidden_size;
  const int vocab = config_.vocab_size;
  const float eps = config_.rms_norm_eps;

  const cpu::FlatBatch flat = cpu::flatten(batch);
  const int rows = flat.rows();
  const size_t hidden_floats = size_t(rows) * hidden;

  // Replicated activations (every rank holds the same residual stream) and one rank's partial results at a time.
  std::vector<float> residual(hidden_floats), normed(hidden_floats), reduced(hidden_floats), partial(hidden_floats);
  cpu::SublayerScratch scratch;
  // The all-reduce of the ranks' partial sums, in rank order: rank 0's partial, plus rank 1's, ...
  auto reduce = [&](int r) {
    if (r == 0) {
      reduced.swap(partial);
      partial.resize(hidden_floats);
    } else {
      accumulate(reduced, partial, hidden_floats);
    }
  };

  cpu::embedding(embed_tokens_.data(), flat.ids.data(), residual.data(), rows, hidden);
  for (int l = 0; l < config_.num_layers; ++l) {
    if (l == 0) {
      cpu::rmsnorm(residual.data(), input_norms_[0].data(), normed.data(), rows, hidden, eps);
    } else {
      cpu::add_rmsnorm(residual.data(), reduced.data(), input_norms_[size_t(l)].data(), normed.data(), rows, hidden,
                       eps);
    }
    for (int r = 0; r < plan_.ranks; ++r) {
      const Rank& rank = ranks_[size_t(r)];
      const cpu::HeadCounts heads{rank.config.num_heads, rank.config.num_kv_heads, config_.head_dim};
      cpu::attention_sublayer(rank.layers[size_t(l)], heads, batch, flat, normed.data(), hidden, inv_freq_.data(),
                              rank.layer_cache(l, layout_.block_size), scratch, partial.data(), &pool_, nullptr, l);
      reduce(r);
    }
    cpu::add_rmsnorm(residual.data(), reduced.data(), post_attention_norms_[size_t(l)].data(), normed.data(), rows,
                     hidden, eps);
    for (int r = 0; r < plan_.ranks; ++r) {
      const Rank& rank = ranks_[size_t(r)];
      cpu::mlp_sublayer(rank.layers[size_t(l)], rank.config.intermediate_size, normed.data(), rows, hidden, scratch,
                        partial.data(), &pool_, nullptr, l);
      reduce(r);
    }
  }
  for (size_t i = 0; i < residual.size(); ++i) residual[i] += reduced[i];

  const std::vector<float> selected = cpu::wanted_rows(batch, flat, residual.data(), hidden);
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
      cpu::copy_kv_blocks(rank.layer_cache(l, layout_.block_size), block_floats, src_dst);
    }
  }
}

}  // namespace qed::tp
