#pragma once
// The optimizer and schedule of RD's training run (transformers Trainer with optim adamw_torch,
// lr_scheduler_type cosine, warmup_ratio, max_grad_norm): torch.optim.AdamW's update with decoupled weight decay,
// transformers' get_cosine_schedule_with_warmup, and clip_grad_norm_. fp32 weights and moments.
#include <cstdint>
#include <span>
#include <vector>

namespace qed::train {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// transformers' get_warmup_steps: ceil(ratio × total).
int64_t warmup_steps(double warmup_ratio, int64_t total_steps);
// The learning rate of optimizer step `step` (0-based; transformers steps the scheduler after the optimizer, so
// step 0 runs at lambda(0), which is 0 with any warmup): linear from 0 over `warmup` steps, then
// 0.5 (1 + cos(π progress)) down to 0 at `total`.
double cosine_lr(double peak_lr, int64_t step, int64_t warmup, int64_t total);

// clip_grad_norm_: the global L2 norm of all gradients (returned), and when it exceeds max_norm > 0 every gradient
// scaled by max_norm / (norm + 1e-6).
double clip_grad_norm(const std::vector<std::span<float>>& grads, double max_norm);

class AdamW {
 public:
  // decays[k]: whether tensor k gets weight decay (transformers' Trainer exempts biases and norms).
  AdamW(AdamWConfig config, const std::vector<size_t>& tensor_sizes, std::vector<bool> decays);
  // One update of params[k] by grads[k] (same sizes as at construction) at learning rate lr.
  void step(const std::vector<std::span<float>>& params, const std::vector<std::span<const float>>& grads, double lr);

  int64_t steps() const { return steps_; }
  // The moments, for checkpoints: m then v of each tensor.
  std::vector<float>& first_moment(size_t k) { return m_[k]; }
  std::vector<float>& second_moment(size_t k) { return v_[k]; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  AdamWConfig config_;
  std::vector<std::vector<float>> m_, v_;
  std::vector<bool> decays_;
  int64_t steps_ = 0;
};

}  // namespace qed::train
