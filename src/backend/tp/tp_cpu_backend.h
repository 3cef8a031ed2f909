#pragma once
// Tensor parallelism simulated exactly on the CPU: the model runs as N shards (shard_plan.h), each rank with its own
// fp32 weights and paged KV cache of its KV heads, through the reference ops of cpu_ops.h. Per layer each rank
// computes its heads' q/k/v, attention and partial o_proj output, the "all-reduce" sums the partials in rank order
// (rank 0 first), likewise for the MLP's down_proj; each rank's lm_head slice gives its vocab columns, gathered in
// rank order with the padding dropped. It is the oracle of the CUDA TP runner's sharding logic and what
// `--backend cpu --tensor-parallel-size N` runs. Ranks execute one after another on one thread pool; the replicated
// parts (embedding, norms, residual) are computed once, as every rank would compute them identically.
//
// Against CpuBackend only the o_proj/down_proj/lm_head reductions are reassociated (per-rank partial dot products,
// then their sum), so logits agree to fp32 rounding; N = 1 is bit-identical.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/tp/shard_plan.h"
#include "core/thread_pool.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace qed::tp {

class TpSimulatedCpuBackend final : public Backend {
 public:
  // Throws qed::Error with one line when the model does not split over `ranks`.
  TpSimulatedCpuBackend(const ModelConfig& config, const Checkpoint& checkpoint, int ranks,
                        const CpuBackendOptions& options);
  static std::unique_ptr<TpSimulatedCpuBackend> load(const std::string& model_dir, int ranks,
                                                     const CpuBackendOptions& options);

  std::string name() const override { return "cpu-tp" + std::to_string(plan_.ranks); }
  const ModelConfig& config() const override { return config_; }
  KvCacheLayout kv_layout() const override { return layout_; }
  void forward(const ForwardBatch& batch, ForwardResult& result) override;
  void copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) override;

  const ShardPlan& plan() const { return plan_; }

 private:
  struct Rank {
    ModelConfig config;                   // the rank's head / KV-head / intermediate counts
    std::vector<cpu::DenseLayer> layers;  // o_bias / down_bias: rank 0's real bias, zeros on the others
    std::vector<float> lm_head;           // [vocab_shard, hidden], zero-padded
    size_t layer_cache_floats = 0;
    std::unique_ptr<float[]> k_cache, v_cache;
    cpu::PagedKv layer_cache(int layer, int block_size) const;
  };

  Rank load_rank(const Checkpoint& checkpoint, int rank) const;

  ModelConfig config_;
  ShardPlan plan_;
  KvCacheLayout layout_;
  ThreadPool pool_;
  std::vector<float> embed_tokens_, final_norm_;
  std::vector<std::vector<float>> input_norms_, post_attention_norms_;  // per layer, replicated
  std::vector<Rank> ranks_;
  std::vector<float> inv_freq_;
};

}  // namespace qed::tp
