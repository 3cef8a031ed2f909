#pragma once
// Tensor parallelism on the GPUs of one host: one process drives N devices, one host thread per rank. Each rank is
// a CudaBackend over its shard (backend/tp/shard_plan.h: its q/KV heads, intermediate rows, a vocab slice of the
// lm_head), which all-reduces (NCCL, sum, bf16, in place) the partial outputs of o_proj and down_proj before the
// residual add; the ranks' logits columns are gathered on the host into [rows, vocab]. To the engine it is one
// Backend: the scheduler, block manager and speculative decoding above it are unchanged (every rank receives the
// same ForwardBatch and keeps the KV cache of its own heads under the same block ids).
//
// NOT RUN ON HARDWARE: multi-GPU machines were not available while this was written. It compiles in CI; the GPU
// tests (tests/backend_cuda/tp_cuda_test.cpp: TP=1 through this runner vs the plain CudaBackend, TP=2 vs TP=1)
// have never executed. docs/tp.md lists what is and is not verified. The sharding itself is verified exactly on the
// CPU (backend/tp/tp_cpu_backend.h).
//
// Differences from a single-device CudaBackend: decode CUDA graphs are off (the all-reduce is not captured), tokens
// are sampled on the host (device sampling would need a vocab-distributed top-k), and with dynamic FP8 activation
// scales each rank scales its own slice of the o_proj/down_proj input (as vLLM).
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_weights.h"
#include "backend/tp/rank_threads.h"
#include "backend/tp/shard_plan.h"
#include "model/model_config.h"

namespace qed::tp {

struct NcclComms;

struct TpCudaOptions {
  int ranks = 1;
  int first_device = 0;     // ranks use devices first_device .. first_device + ranks - 1
  CudaBackendOptions rank;  // per rank (device, cuda_graphs, row_parallel_reduce and lm_head_rows are set here)
};

class TpCudaBackend final : public Backend {
 public:
  ~TpCudaBackend() override;
  // Throws qed::Error (one line) when the model does not split over the ranks or fewer devices are visible.
  static std::unique_ptr<TpCudaBackend> load(const std::string& model_dir, const TpCudaOptions& options);
  // Random weights of `config`'s shape, generated per rank (benchmarks: the right shape and cost, no meaning).
  static std::unique_ptr<TpCudaBackend> random(const ModelConfig& config, uint64_t seed, const TpCudaOptions& options,
                                               cuda::RandomWeightsDtype dtype = cuda::RandomWeightsDtype::Bf16);

  std::string name() const override { return "cuda-tp" + std::to_string(plan_.ranks); }
  const ModelConfig& config() const override { return config_; }
  KvCacheLayout kv_layout() const override { return layout_; }
  void forward(const ForwardBatch& batch, ForwardResult& result) override;
  void copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) override;

  const ShardPlan& plan() const { return plan_; }

 private:
  TpCudaBackend(const ModelConfig& config, const TpCudaOptions& options);
  // Builds rank r's backend from its weights (on its device, from its thread).
  void add_rank(int r, cuda::CudaModelWeights weights, const ModelConfig& rank_config);
  void finish_layout();

  ModelConfig config_;
  TpCudaOptions options_;
  ShardPlan plan_;
  KvCacheLayout layout_;
  std::unique_ptr<NcclComms> comms_;
  std::vector<std::unique_ptr<CudaBackend>> ranks_;
  std::vector<ForwardResult> rank_results_;
  std::unique_ptr<RankThreads> threads_;
};

}  // namespace qed::tp
