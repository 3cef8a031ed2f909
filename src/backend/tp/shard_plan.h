#pragma once
// Tensor parallelism (Megatron-style, as vLLM shards Qwen2/Llama): which slice of every tensor each of N ranks holds,
// and a rank's shard as a Checkpoint of its own, so every backend binds it with ModelWeights::bind as a whole model.
//
//   q/k/v        column-parallel by heads: rank r holds q heads [r·H/N, (r+1)·H/N) and the KV heads those read;
//                KV heads are split when KV % N == 0, else (N % KV == 0) each rank holds the one KV head of its
//                q heads (replicated over N/KV ranks, as vLLM does when N > KV)
//   gate/up      column-parallel by intermediate rows [r·I/N, (r+1)·I/N)
//   o/down       row-parallel: their input columns of the same ranges; the partial outputs of all ranks are summed
//                (the all-reduce); their bias is held by rank 0 only (the other ranks hold zeros: adding 0 is exact)
//   embeddings, norms, KV-cache scales: replicated
//   lm_head      vocab-parallel: rank r holds rows [r·S, (r+1)·S) of the (tied or own) lm_head, S = vocab_shard,
//                the last shard zero-padded; the logits are gathered and the padding columns dropped
// Quantized linear layers: per-tensor weight/input scales are replicated; per-channel weight scales follow their
// output rows (sliced with column-parallel weights, whole with row-parallel ones, whose output is not split). A
// fused q/k/v (or gate/up) requantized to the largest per-tensor scale (cuda/quant_fusion.h) stays consistent:
// every rank sees the same per-tensor scales, so its fused codes are the rows of the unsharded fused codes.
#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/safetensors.h"

namespace qed::tp {

struct RankSlice {
  int q_head_begin = 0, q_heads = 0;    // q heads [begin, begin + count)
  int kv_head_begin = 0, kv_heads = 0;  // KV heads [begin, begin + count)
  int inter_begin = 0, inter = 0;       // intermediate rows [begin, begin + count)
  int vocab_begin = 0, vocab = 0;       // real lm_head rows [begin, begin + count); count <= vocab_shard
};

struct ShardPlan {
  int ranks = 1;
  int vocab_shard = 0;            // lm_head rows per rank, padded (every rank computes this many logits)
  bool kv_replicated = false;     // N > num_kv_heads: ranks share KV heads
  std::vector<RankSlice> slices;  // one per rank

  // Throws qed::Error with one line when the model cannot be split over `ranks` (heads, KV heads or the
  // intermediate size not divisible).
  static ShardPlan make(const ModelConfig& config, int ranks);
};

// lm_head rows per rank are padded to a multiple of this (aligned GEMM rows on the GPU, as vLLM pads to 64).
inline constexpr int kVocabShardAlign = 16;

// Rank r's model: config with its own head / KV-head / intermediate counts (head_dim explicit, vocab and hidden
// unchanged, tie_word_embeddings forced on so no lm_head is bound), tensors under their HF names with the rank's
// shapes, and its lm_head slice apart (kLmHeadShardName, [vocab_shard, hidden]). It views `source`'s memory where a
// slice is contiguous and owns the rest: `source` must outlive it.
struct RankShard {
  int rank = 0;
  RankSlice slice;
  ModelConfig config;
  Checkpoint checkpoint;
  std::vector<std::vector<unsigned char>> storage;  // the sliced copies the checkpoint's tensors point into
};

inline constexpr const char* kLmHeadShardName = "qed.tp.lm_head_shard";

RankShard make_rank_shard(const Checkpoint& source, const ModelConfig& config, const ShardPlan& plan, int rank);

}  // namespace qed::tp
