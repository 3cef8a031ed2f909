#include "train/base_hidden.h"

#include <algorithm>

#include "backend/factory/backend_factory.h"
#include "core/error.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed::train {

BaseHiddenStates::BaseHiddenStates(const std::string& model_dir, const Options& options, size_t max_sequences,
                                   size_t max_length) {
  const ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  BackendSelection selection;
  selection.kind = options.backend;
  selection.threads = options.num_threads;
  selection.num_blocks =
      int(max_sequences * ((max_length + size_t(selection.block_size) - 1) / size_t(selection.block_size)));
  selection.device = options.gpu_device;
  selection.gpu_memory_fraction = options.gpu_memory_fraction;
  // One forward holds every token of a micro-batch.
  selection.max_batched_tokens =
      int(std::max<size_t>(size_t(selection.max_batched_tokens), max_sequences * max_length));
  selection.cuda_graphs = false;  // prefills only
  backend_ = make_backend(model_dir, selection);
  // FP8 checkpoints (qed quantize) keep the embedding table in bf16; the backend decides whether it runs them.
  embeddings_ = tensor_to_f32(*ModelWeights::bind(checkpoint, config, /*allow_quantized=*/true).embed_tokens);
  if (embeddings_.size() != size_t(config.vocab_size) * size_t(config.hidden_size)) {
    fail("{}: embed_tokens is not vocab_size × hidden_size", model_dir);
  }
}

void BaseHiddenStates::compute(std::span<const Example* const> examples,
                               std::span<const std::vector<int32_t>> positions, std::vector<float>& hidden) {
  const int block_size = backend_->kv_layout().block_size;
  ForwardBatch batch;
  batch.want_hidden = true;
  batch.skip_logits = true;  // only the hidden states are used: neither backend runs the lm_head
  int next_block = 0;
  size_t rows = 0;
  for (size_t k = 0; k < examples.size(); ++k) {
    if (positions[k].empty()) continue;
    SequenceChunk& chunk = batch.sequences.emplace_back();
    chunk.tokens = examples[k]->ids;
    const int blocks = int((chunk.tokens.size() + size_t(block_size) - 1) / size_t(block_size));
    if (next_block + blocks > backend_->kv_layout().num_blocks) {
      fail("train-drafter: a batch needs more than the {} KV blocks sized for it", backend_->kv_layout().num_blocks);
    }
    for (int b = 0; b < blocks; ++b) chunk.block_table.push_back(next_block++);
    chunk.logits_indices = positions[k];
    rows += positions[k].size();
  }
  hidden.clear();
  if (rows == 0) return;
  ForwardResult result;
  backend_->forward(batch, result);
  if (result.hidden.size() != rows * size_t(config().hidden_size)) {
    fail("train-drafter: the backend returned {} hidden values for {} rows", result.hidden.size(), rows);
  }
  hidden = std::move(result.hidden);
}

}  // namespace qed::train
