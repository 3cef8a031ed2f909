#pragma once
// The frozen base model's side of ReDrafter training: its final-norm hidden states at chosen positions of a batch
// of sequences (one CpuBackend prefill over all of them, the rows the head trains on as the logits rows), and its
// token embedding table, which the head reads.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "train/redrafter_loss.h"

namespace qed::train {

class BaseHiddenStates {
 public:
  // The KV cache is sized for max_sequences sequences of up to max_length tokens per compute() call.
  BaseHiddenStates(const std::string& model_dir, int num_threads, size_t max_sequences, size_t max_length);

  const ModelConfig& config() const { return backend_->config(); }
  std::span<const float> embeddings() const { return embeddings_; }

  // hidden = the hidden states at positions[k] of examples[k], for every k in turn (rows × hidden_size).
  void compute(std::span<const Example* const> examples, std::span<const std::vector<int32_t>> positions,
               std::vector<float>& hidden);

 private:
  std::unique_ptr<CpuBackend> backend_;
  std::vector<float> embeddings_;
};

}  // namespace qed::train
