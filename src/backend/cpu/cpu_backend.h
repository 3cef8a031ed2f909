#pragma once
// The reference backend: a Qwen2/Llama forward in fp32 on the CPU, weights converted to fp32 once at load, paged
// KV cache in fp32. Simple and exact first; the CUDA backend and every optimisation are checked against it.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/decoder_layer.h"
#include "backend/cpu/quant_ops.h"
#include "core/thread_pool.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed {

struct CpuBackendOptions {
  int num_threads = 0;  // 0 = all hardware threads
  int block_size = 16;  // tokens per KV block
  int num_blocks = 0;   // 0 = as many as kv_cache_bytes holds
  size_t kv_cache_bytes = size_t(256) << 20;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const ModelConfig& config, const Checkpoint& checkpoint, const CpuBackendOptions& options);
  // config.json + safetensors of a model directory.
  static std::unique_ptr<CpuBackend> load(const std::string& model_dir, const CpuBackendOptions& options);

  std::string name() const override { return "cpu"; }
  const ModelConfig& config() const override { return config_; }
  KvCacheLayout kv_layout() const override { return layout_; }
  void forward(const ForwardBatch& batch, ForwardResult& result) override;
  void copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) override;
  // Not owned; null to stop observing. Not thread-safe with a concurrent forward.
  void set_observer(ForwardObserver* observer) { observer_ = observer; }

 private:
  struct Layer {
    std::vector<float> input_norm, post_attention_norm;
    cpu::DenseLayer dense;
  };

  void validate(const ForwardBatch& batch) const;
  cpu::PagedKv layer_cache(int layer);

  ModelConfig config_;
  KvCacheLayout layout_;
  ThreadPool pool_;
  std::vector<float> embed_tokens_;
  std::vector<float> lm_head_;  // empty when tied: the embedding is used
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;
  size_t layer_cache_floats_ = 0;  // floats of K (or V) per layer
  std::unique_ptr<float[]> k_cache_, v_cache_;
  ForwardObserver* observer_ = nullptr;
};

}  // namespace qed
