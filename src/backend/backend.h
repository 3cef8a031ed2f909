#pragma once
// What every compute backend (CPU reference, CUDA) offers the engine: a forward pass over a batch of sequences,
// each contributing a chunk of new tokens (prefill chunk, one decode token, or draft candidates), against a paged KV
// cache that the engine's BlockManager owns the bookkeeping of.
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backend/sampling.h"
#include "model/model_config.h"

namespace qed {

struct KvCacheLayout {
  int block_size = 16;  // tokens per block
  int num_blocks = 0;
};

struct SequenceChunk {
  std::vector<int32_t> tokens;  // new tokens of this sequence to run
  int32_t num_cached = 0;       // tokens already in the KV cache, at cache slots [0, num_cached)
  // RoPE positions of `tokens`; empty = num_cached + i. Tree candidates share depths, so positions repeat.
  std::vector<int32_t> positions;
  // Physical KV blocks of this sequence covering slots [0, num_cached + tokens.size()). Token i's K/V is written
  // at slot num_cached + i: block_table[slot / block_size], offset slot % block_size.
  std::vector<int32_t> block_table;
  // Attention among `tokens`: empty = causal; else tokens.size()² row-major, mask[i*n + j] != 0 lets token i see
  // token j. Every token always sees the whole cached prefix. Tree verification uses this.
  std::vector<uint8_t> attention_mask;
  // Indices into `tokens` whose logits are wanted; empty = the last token only.
  std::vector<int32_t> logits_indices;
};

// A token to draw on the device from logits row `row` (an optional capability: Backend::can_sample_on_device).
struct DeviceSample {
  int32_t row = 0;
  const SamplingParams* params = nullptr;
  uint64_t seed = 0;
  uint64_t step = 0;  // index of the token being generated: the step of sampling_uniform(seed, ·)
};

struct ForwardBatch {
  std::vector<SequenceChunk> sequences;
  bool want_hidden = false;  // also return the final-norm hidden state of each logits row (ReDrafter input)
  // Only for backends whose can_sample_on_device() accepted every entry's params: draw these tokens on the device
  // (ForwardResult::samples), and with skip_logits leave the logits there, so a decode step moves token ids only.
  std::vector<DeviceSample> device_samples;
  // No logits in the result. The CPU and CUDA backends then run the lm_head only for device_samples, so a forward
  // for hidden states alone (want_hidden, the draft-head trainer) skips it.
  bool skip_logits = false;
};

struct ForwardResult {
  int rows = 0;                       // logits rows, sequences in batch order, each in logits_indices order
  std::vector<float> logits;          // rows × vocab_size, fp32 (empty with skip_logits)
  std::vector<float> hidden;          // rows × hidden_size when want_hidden
  std::vector<SampledToken> samples;  // one per device_samples entry, in order
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual KvCacheLayout kv_layout() const = 0;
  // The KV cache's element type as bench results name it: "fp32" (the CPU reference, whose FP8 cache holds the
  // dequantized values), "bf16", "fp8".
  virtual std::string kv_cache_dtype() const { return "fp32"; }
  virtual void forward(const ForwardBatch& batch, ForwardResult& result) = 0;
  // Whether forward() can draw tokens with these parameters on the device exactly as sample_token() would.
  virtual bool can_sample_on_device(const SamplingParams& /*params*/) const { return false; }
  // Copies whole KV blocks (copy-on-write when forked sequences diverge inside a shared block).
  virtual void copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) = 0;
};

}  // namespace qed
