#pragma once
// The frozen base model's side of ReDrafter training: its final-norm hidden states at chosen positions of a batch
// of sequences (one prefill over all of them on the CPU or CUDA backend, the rows the head trains on as the logits
// rows), and its token embedding table, which the head reads.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model_config.h"
#include "train/redrafter_loss.h"

namespace qed::train {

class BaseHiddenStates {
 public:
  // The KV cache is sized for max_sequences sequences of up to max_length tokens per compute() call.
  // backend: "cpu" (num_threads) or "cuda" (gpu_device, gpu_memory_fraction; bf16 or fp8 checkpoints as qed quantize
  // writes them; the CUDA backend returns its bf16 hidden states, widened to fp32).
  struct Options {
    std::string backend = "cpu";
    int num_threads = 0;
    int gpu_device = 0;
    float gpu_memory_fraction = 0.9f;
  };
  BaseHiddenStates(const std::string& model_dir, const Options& options, size_t max_sequences, size_t max_length);

  const ModelConfig& config() const { return backend_->config(); }
  std::span<const float> embeddings() const { return embeddings_; }

  // hidden = the hidden states at positions[k] of examples[k], for every k in turn (rows × hidden_size).
  void compute(std::span<const Example* const> examples, std::span<const std::vector<int32_t>> positions,
               std::vector<float>& hidden);

 private:
  std::unique_ptr<Backend> backend_;
  std::vector<float> embeddings_;
};

}  // namespace qed::train
