#pragma once
// The reference backend: a Qwen2/Llama forward in fp32 on the CPU, weights converted to fp32 once at load, paged
// KV cache in fp32. Simple and exact first; the CUDA backend and every optimisation are checked against it.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "core/thread_pool.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed {

// The activations a quantizer calibrates on, seen during CpuBackend::forward (qed quantize's amax recorder).
// Unset (the default) the forward pays one null check per layer.
enum class LinearInput { Qkv, O, GateUp, Down };  // q/k/v share an input, and so do gate/up
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  // x: count floats of the input of the linear layers at `site` of `layer`, before any activation quantization.
  virtual void linear_input(int layer, LinearInput site, const float* x, size_t count) = 0;
  // The K (after RoPE) and V values of the new tokens as they go into the KV cache, before FP8 KV quantization.
  virtual void kv_written(int layer, const float* k, const float* v, size_t count) = 0;
};

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
  // How a linear layer's input is quantized in a FP8 checkpoint: not at all, with the calibrated static scale, or
  // with a per-tensor scale from the input's own amax (vLLM's dynamic per-tensor scheme).
  struct InputQuant {
    ActivationScheme scheme = ActivationScheme::None;
    float scale = 0.0f;  // static only
  };
  struct Layer {
    std::vector<float> input_norm, post_attention_norm;
    std::vector<float> q_proj, k_proj, v_proj, o_proj;
    std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty when absent
    std::vector<float> gate_up_proj;                    // [2 * intermediate, hidden]: gate rows, then up rows
    std::vector<float> gate_up_bias, down_bias;
    std::vector<float> down_proj;
    InputQuant q_input, k_input, v_input, o_input, gate_up_input, down_input;
    float k_cache_scale = 0.0f, v_cache_scale = 0.0f;  // > 0: the KV cache holds FP8 values with these scales
  };

  InputQuant input_quant(const LinearScales& scales) const;
  // The values linear layer input x (n floats) is multiplied with: x itself, or its FP8 quantize-dequantize in
  // `scratch` (the same numbers an FP8 GEMM reads, its scale folded back in).
  static const float* quantized_input(const InputQuant& quant, const float* x, size_t n, std::vector<float>& scratch);

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
