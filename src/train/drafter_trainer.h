#pragma once
// qed train-drafter: trains a ReDrafter draft head on a frozen base model, RD's recipe (AdamW, cosine LR with
// linear warmup, gradient clipping, gradient accumulation), in fp32 on the CPU or with bf16 GEMMs and fp32 master
// weights on a GPU (--backend cuda: the base model on the CUDA backend, the head step of train/cuda/). The CPU run
// is deterministic for a seed: the head's initialisation, the per-epoch data order and every reduction are fixed,
// independent of the thread count. Both backends share the data order, schedule, checkpoint format and metrics, so
// --resume continues a run on either.
//
// --out receives config.json + model.safetensors (the head, loadable by `--spec redrafter --drafter OUT`),
// metrics.jsonl (one line per logged step: loss, redrafter{i}_loss, redrafter{i}_top{k}, lr, grad_norm) and
// checkpoint/ (head, AdamW moments, trainer_state.json with the step; the data position follows from the step and
// the seed), from which --resume continues to the same weights an uninterrupted run reaches.
#include <cstdint>
#include <string>

#include "train/redrafter_loss.h"

namespace qed::train {

struct TrainDrafterOptions {
  std::string model_dir;
  std::string data_path;
  std::string out_dir;
  int n_tokens = 3;    // RD drafter_predict_n_tokens
  int num_layers = 2;  // RD drafter_num_layers
  bool rnn = true;
  int exit_dim = 0;  // 0 = 2 × hidden_size (RD/NS: no input projection)
  double lr = 1e-3;
  double warmup_ratio = 0.1;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;  // transformers' Trainer default; 0 = no clipping
  int epochs = 1;
  int max_len = 2048;
  int64_t rows = 50000;
  int batch = 8;       // sequences per micro-batch (one base-model forward)
  int grad_accum = 1;  // micro-batches per optimizer step
  int top_k = 5;       // RD drafter_top_k: redrafter{i}_top1..top{k}
  uint64_t seed = 42;
  int threads = 0;                   // 0 = all hardware threads
  std::string backend = "cpu";       // cpu | cuda: where the base model and the head step run
  int gpu_device = 0;                // cuda
  float gpu_memory_fraction = 0.9f;  // cuda: what the run may hold on the device (base model + head buffers)
  int logits_chunk_rows = 0;         // cuda: rows per vocab-projection pass (0 = about 1 GiB of logits)
  int64_t max_steps = 0;             // > 0: stop the schedule here instead of after `epochs` (the LR schedule uses it)
  int save_every = 200;              // steps between checkpoints (and at the end)
  int log_every = 1;
  bool resume = false;
  bool progress = true;  // progress bar on stderr
  // > 0: return after this many steps without saving anything more, as if killed there (tests of --resume).
  int64_t stop_after = 0;
};

struct TrainDrafterResult {
  int64_t steps = 0;  // optimizer steps done (in total, counting those before a resume)
  int64_t total_steps = 0;
  DraftMetrics last;  // the last step's metrics
};

TrainDrafterResult train_drafter(const TrainDrafterOptions& options);

// The head a run starts from for `seed`: torch.nn.Linear's default initialisation of every linear, from one
// mt19937_64 stream.
spec::RedrafterHead initial_head(const spec::RedrafterConfig& config, uint64_t seed);

}  // namespace qed::train
