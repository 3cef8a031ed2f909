#include "train/head_step.h"

#include <algorithm>

#include "core/error.h"
#include "core/thread_pool.h"

namespace qed::train {
namespace {

class CpuHeadStep final : public HeadStep {
 public:
  CpuHeadStep(const HeadStepContext& context, ThreadPool* pool)
      : context_(context), pool_(pool), grads_(context.head->config()) {
    params_ = head_tensors(*context_.head).params;
    grads_views_ = head_tensors(grads_).params;
  }

  void zero_grads() override {
    for (const std::span<float>& g : grads_views_) std::fill(g.begin(), g.end(), 0.0f);
  }

  DraftMetrics accumulate(const DraftRows& rows, float grad_scale) override {
    return redrafter_loss(*context_.head, rows, context_.embeddings, context_.top_k, &grads_, grad_scale, pool_);
  }

  double apply(double lr, double max_grad_norm) override {
    const double norm = clip_grad_norm(grads_views_, max_grad_norm);
    const std::vector<std::span<const float>> grads(grads_views_.begin(), grads_views_.end());
    context_.adam->step(params_, grads, lr);
    return norm;
  }

  void sync_to_host() override {}  // the host head is the one trained
  void load_from_host() override {}

  void gradients(spec::RedrafterHead& out) override {
    const HeadTensors to = head_tensors(out);
    for (size_t k = 0; k < grads_views_.size(); ++k) {
      if (to.params[k].size() != grads_views_[k].size()) fail("head step gradients: a head of another config");
      std::copy(grads_views_[k].begin(), grads_views_[k].end(), to.params[k].begin());
    }
  }

 private:
  HeadStepContext context_;
  ThreadPool* pool_;
  spec::RedrafterHead grads_;
  std::vector<std::span<float>> params_, grads_views_;
};

}  // namespace

HeadTensors head_tensors(spec::RedrafterHead& head) {
  HeadTensors t;
  for (auto& [name, linear] : head.linears()) {
    t.names.push_back(name + ".weight");
    t.params.emplace_back(linear->weight);
    t.sizes.push_back(linear->weight.size());
    t.decays.push_back(true);
    if (!linear->bias.empty()) {
      t.names.push_back(name + ".bias");
      t.params.emplace_back(linear->bias);
      t.sizes.push_back(linear->bias.size());
      t.decays.push_back(false);
    }
  }
  return t;
}

std::unique_ptr<HeadStep> make_cpu_head_step(const HeadStepContext& context, ThreadPool* pool) {
  return std::make_unique<CpuHeadStep>(context, pool);
}

#ifndef QED_WITH_CUDA_TRAIN
std::unique_ptr<HeadStep> make_cuda_head_step(const HeadStepContext&, const CudaHeadStepOptions&) {
  fail("train-drafter --backend cuda: this qed was built without CUDA (configure where nvcc is found, QED_CUDA=ON)");
}
#endif

}  // namespace qed::train
