#pragma once
// The backend-specific half of qed train-drafter: one optimizer step of the draft head, given the micro-batches'
// draft rows. The trainer (drafter_trainer.cpp) owns everything else (data order, schedule, checkpoints, metrics)
// and the host copy of the head and AdamW moments, which is what checkpoints hold, so a run checkpointed by one
// implementation resumes on the other.
//   cpu:  fp32 throughout (redrafter_loss.cpp, adamw.cpp), on the host head in place.
//   cuda: fp32 master weights and moments on the device, bf16 GEMM operands (train/cuda/cuda_head_step.h).
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "train/adamw.h"
#include "train/redrafter_loss.h"

namespace qed {
class ThreadPool;
}

namespace qed::train {

// The head's tensors in checkpoint order (each linear's weight, then its bias if it has one) as views into it:
// the layout of optimizer.safetensors and of the AdamW moments.
struct HeadTensors {
  std::vector<std::string> names;
  std::vector<std::span<float>> params;
  std::vector<size_t> sizes;
  std::vector<bool> decays;  // weights decay, biases do not (transformers' Trainer)
};
HeadTensors head_tensors(spec::RedrafterHead& head);

class HeadStep {
 public:
  virtual ~HeadStep() = default;
  // Clears the gradient accumulators (the start of an optimizer step).
  virtual void zero_grads() = 0;
  // The loss and metrics of the current weights on `rows`; adds grad_scale × ∂loss/∂θ to the accumulators.
  virtual DraftMetrics accumulate(const DraftRows& rows, float grad_scale) = 0;
  // clip_grad_norm (max_grad_norm 0 = off), then one AdamW update at `lr`; returns the norm before clipping.
  virtual double apply(double lr, double max_grad_norm) = 0;
  // Brings the host head and AdamW (moments and step count) up to date, for a checkpoint or the final save.
  virtual void sync_to_host() = 0;
  // Takes the host head and AdamW as they are now (after --resume loaded them).
  virtual void load_from_host() = 0;
  // The accumulated gradients, into a head of the same config (tests compare the implementations).
  virtual void gradients(spec::RedrafterHead& out) = 0;
};

struct HeadStepContext {
  spec::RedrafterHead* head = nullptr;  // the trainer's host head
  AdamW* adam = nullptr;                // and optimizer (moments in head_tensors order)
  AdamWConfig adam_config;
  std::span<const float> embeddings;  // the base model's table, vocab × hidden
  int top_k = 5;
};

// pool: the CPU threads of the fp32 loss (null = this thread).
std::unique_ptr<HeadStep> make_cpu_head_step(const HeadStepContext& context, ThreadPool* pool);

struct CudaHeadStepOptions {
  int device = 0;
  // Rows of logits (× vocab × 6 bytes: fp32 logits + bf16 gradient) computed at once; 0 = sized from the vocab
  // for about 1 GiB.
  int logits_chunk_rows = 0;
  // Of the device's memory, what the process may hold with the head's buffers allocated (the base model included).
  float memory_fraction = 0.9f;
};
// Throws a one-line qed::Error when this binary has no CUDA or the device is missing.
std::unique_ptr<HeadStep> make_cuda_head_step(const HeadStepContext& context, const CudaHeadStepOptions& options);

}  // namespace qed::train
