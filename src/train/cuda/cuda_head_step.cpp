// The CUDA head step (train/head_step.h): redrafter_loss.cpp's forward and backward, and adamw.cpp's update, on the
// device. Precision: fp32 master weights, gradients and AdamW moments; every product of the head (rnn_w, rnn_u, the
// input projection, the ResBlocks, the vocab projection) a bf16 × bf16 GEMM with fp32 accumulation, from bf16
// copies of the weights refreshed after each update; the elementwise parts (SiLU, the recurrence, the residuals,
// the cross-entropy and its gradient, the bias sums, AdamW) in fp32 in our kernels. The vocab projection runs in
// chunks of rows so that rows × vocab logits never exist at once.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/gemm.h"
#include "core/dtype.h"
#include "core/error.h"
#include "train/cuda/train_kernels.h"
#include "train/head_step.h"

namespace qed::train {
namespace {

using cuda::DeviceBuffer;
using spec::RedrafterHead;

// Every tensor of the flat parameter buffer starts at a multiple of 64 elements: 128-byte aligned bf16 copies,
// which cuBLASLt's fastest kernels want.
constexpr size_t kTensorAlign = 64;

size_t round_up(size_t x, size_t to) {
  return (x + to - 1) / to * to;
}

void grow(DeviceBuffer& buffer, size_t bytes) {
  if (buffer.bytes() < bytes) buffer = DeviceBuffer(std::max<size_t>(bytes, 1));
}

// Where one linear's weight and bias live in the flat buffers.
struct LinearSlot {
  size_t weight = 0, bias = 0;
  bool has_bias = false;
};

// What the backward pass needs of one iteration's forward (redrafter_loss.cpp's IterationActivations).
struct IterationBuffers {
  DeviceBuffer embedding;  // bf16 rows × h
  DeviceBuffer pre_state;  // f32 rows × h (rnn)
  DeviceBuffer state;      // f32 rows × h
  DeviceBuffer state_bf16;
  DeviceBuffer input;  // f32 rows × 2h: context ⊕ state
  DeviceBuffer input_bf16;
  std::vector<DeviceBuffer> z, z_bf16;  // num_layers + 1, rows × e; [0] unused without an input projection
  std::vector<DeviceBuffer> pre;        // num_layers, rows × e
};

class CudaHeadStep final : public HeadStep {
 public:
  CudaHeadStep(const HeadStepContext& context, const CudaHeadStepOptions& options)
      : context_(context), config_(context.head->config()) {
    const std::vector<cuda::DeviceInfo> devices = cuda::list_devices();
    if (devices.empty()) fail("train-drafter --backend cuda: no CUDA device is visible");
    if (options.device < 0 || size_t(options.device) >= devices.size()) {
      fail("train-drafter: --gpu-device {} does not exist ({} visible)", options.device, devices.size());
    }
    QED_CUDA_CHECK(cudaSetDevice(options.device));
    QED_CUDA_CHECK(cudaStreamCreate(&stream_));
    gemm_ = std::make_unique<cuda::Gemm>();
    h_ = config_.hidden_size;
    e_ = config_.exit_dim;
    v_ = config_.vocab_size;
    layers_ = config_.num_draft_layers;
    // The default keeps every chunk's row offset a multiple of 64, so chunk pointers stay 16-byte aligned.
    chunk_rows_ = options.logits_chunk_rows > 0 ? options.logits_chunk_rows
                                                : std::max(64, int((size_t(1) << 30) / (size_t(v_) * 6)) / 64 * 64);
    memory_fraction_ = options.memory_fraction;
    if (!(memory_fraction_ > 0.0f && memory_fraction_ <= 1.0f))
      fail("train-drafter: --gpu-memory-fraction must be in (0, 1], got {}", memory_fraction_);

    // The flat layout, in head_tensors order, and each linear's slots in it.
    std::map<const RedrafterHead::Linear*, LinearSlot> slots;
    size_t at = 0;
    for (auto& [name, linear] : context_.head->linears()) {
      LinearSlot slot;
      slot.weight = at;
      offsets_.push_back(at);
      sizes_.push_back(linear->weight.size());
      at = round_up(at + linear->weight.size(), kTensorAlign);
      if (!linear->bias.empty()) {
        slot.has_bias = true;
        slot.bias = at;
        offsets_.push_back(at);
        sizes_.push_back(linear->bias.size());
        at = round_up(at + linear->bias.size(), kTensorAlign);
      }
      slots[linear] = slot;
    }
    total_ = std::max<size_t>(at, 1);
    decays_ = head_tensors(*context_.head).decays;
    RedrafterHead& head = *context_.head;
    if (config_.has_input_proj()) input_proj_ = slots.at(&head.input_proj);
    for (int l = 0; l < layers_; ++l) blocks_.push_back(slots.at(&head.res_blocks[size_t(l)]));
    vocab_proj_ = slots.at(&head.vocab_proj);
    if (config_.rnn) {
      rnn_u_ = slots.at(&head.rnn_u);
      rnn_w_ = slots.at(&head.rnn_w);
    }

    params_ = DeviceBuffer(total_ * sizeof(float));
    grads_ = DeviceBuffer(total_ * sizeof(float));
    m_ = DeviceBuffer(total_ * sizeof(float));
    v_buf_ = DeviceBuffer(total_ * sizeof(float));
    params_bf16_ = DeviceBuffer(total_ * sizeof(uint16_t));
    for (DeviceBuffer* b : {&params_, &grads_, &m_, &v_buf_}) {
      QED_CUDA_CHECK(cudaMemsetAsync(b->data(), 0, b->bytes(), stream_));
    }
    norm_partials_ = DeviceBuffer(gpu::kSquareSumBlocks * sizeof(double));

    if (context_.embeddings.size() != size_t(v_) * size_t(h_)) {
      fail("train-drafter: the embedding table has {} values, not vocab {} × hidden {}", context_.embeddings.size(), v_,
           h_);
    }
    std::vector<uint16_t> table(context_.embeddings.size());
    for (size_t i = 0; i < table.size(); ++i) table[i] = float_to_bf16(context_.embeddings[i]);
    embeddings_ = DeviceBuffer(table.size() * sizeof(uint16_t));
    copy_to_device(embeddings_.data(), table.data(), table.size() * sizeof(uint16_t));
    load_from_host();
  }

  ~CudaHeadStep() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  void zero_grads() override { QED_CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, grads_.bytes(), stream_)); }

  DraftMetrics accumulate(const DraftRows& rows, float grad_scale) override;
  double apply(double lr, double max_grad_norm) override;

  void sync_to_host() override {
    const HeadTensors tensors = head_tensors(*context_.head);
    for (size_t k = 0; k < offsets_.size(); ++k) {
      copy_to_host(tensors.params[k].data(), param(offsets_[k]), sizes_[k] * sizeof(float));
      context_.adam->first_moment(k).resize(sizes_[k]);
      context_.adam->second_moment(k).resize(sizes_[k]);
      copy_to_host(context_.adam->first_moment(k).data(), m_.as<float>() + offsets_[k], sizes_[k] * sizeof(float));
      copy_to_host(context_.adam->second_moment(k).data(), v_buf_.as<float>() + offsets_[k], sizes_[k] * sizeof(float));
    }
    context_.adam->set_steps(steps_);
  }

  void gradients(RedrafterHead& out) override {
    const HeadTensors to = head_tensors(out);
    if (to.params.size() != offsets_.size()) fail("head step gradients: a head of another config");
    for (size_t k = 0; k < offsets_.size(); ++k) {
      if (to.params[k].size() != sizes_[k]) fail("head step gradients: a head of another config");
      copy_to_host(to.params[k].data(), grad(offsets_[k]), sizes_[k] * sizeof(float));
    }
  }

  void load_from_host() override {
    const HeadTensors tensors = head_tensors(*context_.head);
    for (size_t k = 0; k < offsets_.size(); ++k) {
      if (context_.adam->first_moment(k).size() != sizes_[k] || context_.adam->second_moment(k).size() != sizes_[k]) {
        fail("train-drafter: AdamW state of '{}' has the wrong size", tensors.names[k]);
      }
      copy_to_device(param(offsets_[k]), tensors.params[k].data(), sizes_[k] * sizeof(float));
      copy_to_device(m_.as<float>() + offsets_[k], context_.adam->first_moment(k).data(), sizes_[k] * sizeof(float));
      copy_to_device(v_buf_.as<float>() + offsets_[k], context_.adam->second_moment(k).data(),
                     sizes_[k] * sizeof(float));
    }
    steps_ = context_.adam->steps();
    gpu::f32_to_bf16(params_.as<float>(), params_bf16_.as<uint16_t>(), total_, stream_);
    QED_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  float* param(size_t offset) const { return params_.as<float>() + offset; }
  float* grad(size_t offset) const { return grads_.as<float>() + offset; }
  const uint16_t* weight_bf16(size_t offset) const { return params_bf16_.as<uint16_t>() + offset; }

  void copy_to_device(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    QED_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    QED_CUDA_CHECK(cudaStreamSynchronize(stream_));  // src is pageable host memory the caller may reuse
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    QED_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    QED_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void ensure_capacity(size_t rows, int n_tokens);
  void forward(int rows, int n_tokens);
  void backward(int rows, int n_tokens, const std::vector<int64_t>& targets, float grad_scale);

  HeadStepContext context_;
  spec::RedrafterConfig config_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::Gemm> gemm_;
  int h_ = 0, e_ = 0, v_ = 0, layers_ = 0, chunk_rows_ = 0;
  float memory_fraction_ = 0.9f;
  int64_t steps_ = 0;

  std::vector<size_t> offsets_, sizes_;
  std::vector<bool> decays_;
  size_t total_ = 0;
  LinearSlot input_proj_, vocab_proj_, rnn_u_, rnn_w_;
  std::vector<LinearSlot> blocks_;
  DeviceBuffer params_, grads_, m_, v_buf_, params_bf16_, norm_partials_, embeddings_;

  // Per micro-batch, grown to the largest seen.
  size_t capacity_rows_ = 0;
  std::vector<IterationBuffers> iterations_;
  DeviceBuffer context_dev_, inputs_dev_, targets_dev_;
  DeviceBuffer logits_, dlogits_, row_loss_, row_rank_;
  DeviceBuffer dz_, dz_bf16_, dy_, dy_bf16_, dinput_, carry_, dpre_, dpre_bf16_, column_partials_;
};

void CudaHeadStep::ensure_capacity(size_t rows, int n_tokens) {
  const size_t h = size_t(h_), e = size_t(e_), n = size_t(n_tokens);
  std::vector<std::pair<DeviceBuffer*, size_t>> wanted;  // every buffer with the bytes it needs
  size_t capacity = capacity_rows_;
  if (rows > capacity_rows_ || iterations_.size() < n) {
    const size_t r = std::max(capacity_rows_, round_up(rows, 64));
    iterations_.resize(std::max(iterations_.size(), n));
    for (IterationBuffers& it : iterations_) {
      wanted.insert(wanted.end(), {{&it.embedding, r * h * 2},
                                   {&it.state, r * h * 4},
                                   {&it.state_bf16, r * h * 2},
                                   {&it.input, r * 2 * h * 4},
                                   {&it.input_bf16, r * 2 * h * 2}});
      if (config_.rnn) wanted.push_back({&it.pre_state, r * h * 4});
      it.z.resize(size_t(layers_) + 1);
      it.z_bf16.resize(size_t(layers_) + 1);
      it.pre.resize(size_t(layers_));
      for (size_t l = 0; l <= size_t(layers_); ++l) {
        if (l == 0 && !config_.has_input_proj()) continue;  // z_0 is the input
        wanted.insert(wanted.end(), {{&it.z[l], r * e * 4}, {&it.z_bf16[l], r * e * 2}});
      }
      for (DeviceBuffer& p : it.pre) wanted.push_back({&p, r * e * 4});
    }
    wanted.insert(wanted.end(), {{&context_dev_, r * h * 4},
                                 {&inputs_dev_, r * n * 4},
                                 {&targets_dev_, r * n * 4},
                                 {&row_loss_, r * n * 4},
                                 {&row_rank_, r * n * 4},
                                 {&dz_, r * e * 4},
                                 {&dy_, r * e * 4},
                                 {&dz_bf16_, r * e * 2},
                                 {&dy_bf16_, r * e * 2},
                                 {&carry_, r * h * 4},
                                 {&dpre_, r * h * 4},
                                 {&dpre_bf16_, r * h * 2},
                                 {&column_partials_, size_t(gpu::kColumnSumChunks) * std::max(h, e) * 4}});
    if (config_.has_input_proj()) wanted.push_back({&dinput_, r * 2 * h * 4});
    capacity = r;
  }
  const size_t chunk = std::min(size_t(chunk_rows_), capacity);
  wanted.insert(wanted.end(), {{&logits_, chunk * size_t(v_) * 4}, {&dlogits_, chunk * size_t(v_) * 2}});

  // --gpu-memory-fraction bounds what this process holds on the device (the base model included): a micro-batch
  // too large for it is a clear error rather than an out-of-memory in the middle of a step.
  size_t more = 0;
  for (const auto& [buffer, bytes] : wanted) more += bytes > buffer->bytes() ? bytes - buffer->bytes() : 0;
  if (more == 0) {
    capacity_rows_ = capacity;
    return;
  }
  size_t free_bytes = 0, total_bytes = 0;
  QED_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const double budget = double(memory_fraction_) * double(total_bytes), used = double(total_bytes - free_bytes);
  if (used + double(more) > budget) {
    fail(
        "train-drafter: a micro-batch of {} draft rows needs {:.2f} GiB more on the GPU, beyond --gpu-memory-fraction "
        "{} ({:.1f} of {:.1f} GiB in use): lower --batch or --max-len",
        rows, double(more) / double(1 << 30), memory_fraction_, used / double(1 << 30),
        double(total_bytes) / double(1 << 30));
  }
  for (const auto& [buffer, bytes] : wanted) grow(*buffer, bytes);
  capacity_rows_ = capacity;
}

void CudaHeadStep::forward(int rows, int n_tokens) {
  const int h = h_, e = e_;
  for (int i = 0; i < n_tokens; ++i) {
    IterationBuffers& it = iterations_[size_t(i)];
    const IterationBuffers* prev = i > 0 ? &iterations_[size_t(i) - 1] : nullptr;
    gpu::gather_embeddings_bf16(embeddings_.as<uint16_t>(), inputs_dev_.as<int32_t>(), n_tokens, i,
                                it.embedding.as<uint16_t>(), rows, h, stream_);
    if (config_.rnn) {
      gemm_->linear_forward(it.embedding.as<uint16_t>(), weight_bf16(rnn_w_.weight), it.pre_state.as<float>(), rows, h,
                            h, 0.0f, stream_);
      if (prev) {
        gemm_->linear_forward(prev->state_bf16.as<uint16_t>(), weight_bf16(rnn_u_.weight), it.pre_state.as<float>(),
                              rows, h, h, 1.0f, stream_);
      }
    }
    gpu::state_forward(config_.rnn, config_.rnn ? it.pre_state.as<float>() : nullptr,
                       config_.rnn ? param(rnn_u_.bias) : nullptr, prev ? prev->state.as<float>() : nullptr,
                       it.embedding.as<uint16_t>(), context_dev_.as<float>(), it.state.as<float>(),
                       it.state_bf16.as<uint16_t>(), it.input.as<float>(), it.input_bf16.as<uint16_t>(), rows, h,
                       stream_);
    float* z = it.input.as<float>();
    uint16_t* z_bf16 = it.input_bf16.as<uint16_t>();
    if (config_.has_input_proj()) {
      z = it.z[0].as<float>();
      z_bf16 = it.z_bf16[0].as<uint16_t>();
      gemm_->linear_forward(it.input_bf16.as<uint16_t>(), weight_bf16(input_proj_.weight), z, rows, 2 * h, e, 0.0f,
                            stream_);
      gpu::linear_epilogue(z, param(input_proj_.bias), nullptr, z, z_bf16, rows, e, stream_);
    }
    for (int l = 0; l < layers_; ++l) {
      float* pre = it.pre[size_t(l)].as<float>();
      gemm_->linear_forward(z_bf16, weight_bf16(blocks_[size_t(l)].weight), pre, rows, e, e, 0.0f, stream_);
      float* next = it.z[size_t(l) + 1].as<float>();
      uint16_t* next_bf16 = it.z_bf16[size_t(l) + 1].as<uint16_t>();
      gpu::linear_epilogue(pre, param(blocks_[size_t(l)].bias), z, next, next_bf16, rows, e, stream_);
      z = next;
      z_bf16 = next_bf16;
    }
  }
}

void CudaHeadStep::backward(int rows, int n_tokens, const std::vector<int64_t>& targets, float grad_scale) {
  const int h = h_, e = e_, v = v_;
  const size_t r = size_t(rows);
  QED_CUDA_CHECK(cudaMemsetAsync(carry_.data(), 0, r * size_t(h) * sizeof(float), stream_));
  for (int i = n_tokens - 1; i >= 0; --i) {
    IterationBuffers& it = iterations_[size_t(i)];
    const IterationBuffers* prev = i > 0 ? &iterations_[size_t(i) - 1] : nullptr;
    auto z_of = [&](int l) {
      return l == 0 && !config_.has_input_proj() ? it.input_bf16.as<uint16_t>() : it.z_bf16[size_t(l)].as<uint16_t>();
    };
    const uint16_t* last = z_of(layers_);
    const int64_t count = targets[size_t(i)];
    const float weight = count > 0 ? grad_scale / float(count) : 0.0f;
    float* dz = dz_.as<float>();
    for (int c0 = 0; c0 < rows; c0 += chunk_rows_) {
      const int cr = std::min(chunk_rows_, rows - c0);
      const uint16_t* last_chunk = last + size_t(c0) * size_t(e);
      gemm_->linear_forward(last_chunk, weight_bf16(vocab_proj_.weight), logits_.as<float>(), cr, e, v, 0.0f, stream_);
      gpu::cross_entropy_rows(logits_.as<float>(), cr, v, targets_dev_.as<int32_t>() + size_t(c0) * size_t(n_tokens),
                              n_tokens, i, weight, dlogits_.as<uint16_t>(),
                              row_loss_.as<float>() + size_t(i) * r + size_t(c0),
                              row_rank_.as<int32_t>() + size_t(i) * r + size_t(c0), stream_);
      gemm_->linear_input_grad(dlogits_.as<uint16_t>(), weight_bf16(vocab_proj_.weight), dz + size_t(c0) * size_t(e),
                               cr, e, v, 0.0f, stream_);
      gemm_->linear_weight_grad(dlogits_.as<uint16_t>(), last_chunk, grad(vocab_proj_.weight), cr, e, v, stream_);
    }
    for (int l = layers_ - 1; l >= 0; --l) {
      const LinearSlot& block = blocks_[size_t(l)];
      gpu::silu_backward(dz, it.pre[size_t(l)].as<float>(), dy_.as<float>(), dy_bf16_.as<uint16_t>(), r * size_t(e),
                         stream_);
      gemm_->linear_weight_grad(dy_bf16_.as<uint16_t>(), z_of(l), grad(block.weight), rows, e, e, stream_);
      gpu::column_sum_add(dy_.as<float>(), rows, e, column_partials_.as<float>(), grad(block.bias), stream_);
      gemm_->linear_input_grad(dy_bf16_.as<uint16_t>(), weight_bf16(block.weight), dz, rows, e, e, 1.0f, stream_);
    }
    const float* dinput = dz;  // without an input projection z_0 is the input
    if (config_.has_input_proj()) {
      gpu::f32_to_bf16(dz, dz_bf16_.as<uint16_t>(), r * size_t(e), stream_);
      gemm_->linear_weight_grad(dz_bf16_.as<uint16_t>(), it.input_bf16.as<uint16_t>(), grad(input_proj_.weight), rows,
                                2 * h, e, stream_);
      gpu::column_sum_add(dz, rows, e, column_partials_.as<float>(), grad(input_proj_.bias), stream_);
      gemm_->linear_input_grad(dz_bf16_.as<uint16_t>(), weight_bf16(input_proj_.weight), dinput_.as<float>(), rows,
                               2 * h, e, 0.0f, stream_);
      dinput = dinput_.as<float>();
    }
    gpu::state_backward(config_.rnn, dinput, carry_.as<float>(), config_.rnn ? it.pre_state.as<float>() : nullptr,
                        dpre_.as<float>(), dpre_bf16_.as<uint16_t>(), rows, h, stream_);
    if (config_.rnn) {
      gemm_->linear_weight_grad(dpre_bf16_.as<uint16_t>(), it.embedding.as<uint16_t>(), grad(rnn_w_.weight), rows, h, h,
                                stream_);
      gpu::column_sum_add(dpre_.as<float>(), rows, h, column_partials_.as<float>(), grad(rnn_u_.bias), stream_);
      if (prev) {
        gemm_->linear_weight_grad(dpre_bf16_.as<uint16_t>(), prev->state_bf16.as<uint16_t>(), grad(rnn_u_.weight), rows,
                                  h, h, stream_);
        gemm_->linear_input_grad(dpre_bf16_.as<uint16_t>(), weight_bf16(rnn_u_.weight), carry_.as<float>(), rows, h, h,
                                 0.0f, stream_);
      }
    }
  }
}

DraftMetrics CudaHeadStep::accumulate(const DraftRows& rows, float grad_scale) {
  validate_draft_rows(config_, rows, context_.embeddings.size());
  const size_t r = rows.rows, n = size_t(rows.n_tokens);
  DraftMetrics metrics;
  metrics.top_k = context_.top_k;
  metrics.loss.assign(n, 0.0);
  metrics.targets.assign(n, 0);
  metrics.hits.assign(n, std::vector<int64_t>(size_t(std::max(context_.top_k, 0)), 0));
  for (size_t i = 0; i < n; ++i) {
    for (size_t row = 0; row < r; ++row) metrics.targets[i] += rows.targets[row * n + i] != kIgnoreLabel ? 1 : 0;
  }
  if (r == 0) return metrics;
  if (r > size_t(std::numeric_limits<int>::max() / 4)) fail("train-drafter: {} draft rows in one micro-batch", r);
  ensure_capacity(r, rows.n_tokens);
  QED_CUDA_CHECK(cudaMemcpyAsync(context_dev_.data(), rows.context.data(), rows.context.size() * sizeof(float),
                                 cudaMemcpyHostToDevice, stream_));
  QED_CUDA_CHECK(cudaMemcpyAsync(inputs_dev_.data(), rows.inputs.data(), rows.inputs.size() * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream_));
  QED_CUDA_CHECK(cudaMemcpyAsync(targets_dev_.data(), rows.targets.data(), rows.targets.size() * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream_));
  forward(int(r), rows.n_tokens);
  backward(int(r), rows.n_tokens, metrics.targets, grad_scale);
  std::vector<float> loss(r * n);
  std::vector<int32_t> rank(r * n);
  QED_CUDA_CHECK(
      cudaMemcpyAsync(loss.data(), row_loss_.data(), loss.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  QED_CUDA_CHECK(
      cudaMemcpyAsync(rank.data(), row_rank_.data(), rank.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  QED_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < n; ++i) {
    double sum = 0.0;
    for (size_t row = 0; row < r; ++row) {
      const int32_t k_rank = rank[i * r + row];
      if (k_rank < 0) continue;
      sum += double(loss[i * r + row]);
      for (int k = 1; k <= context_.top_k; ++k) metrics.hits[i][size_t(k - 1)] += k_rank < k ? 1 : 0;
    }
    metrics.loss[i] = metrics.targets[i] > 0 ? sum / double(metrics.targets[i]) : 0.0;
  }
  return metrics;
}

double CudaHeadStep::apply(double lr, double max_grad_norm) {
  gpu::sum_squares(grads_.as<float>(), total_, norm_partials_.as<double>(), stream_);
  std::vector<double> partials(gpu::kSquareSumBlocks);
  copy_to_host(partials.data(), norm_partials_.data(), partials.size() * sizeof(double));
  double sum = 0.0;
  for (double p : partials) sum += p;
  const double norm = std::sqrt(sum);
  // As clip_grad_norm and AdamW::step compute them (adamw.cpp).
  gpu::AdamWStepArgs args;
  args.grad_scale = max_grad_norm > 0.0 && norm > max_grad_norm ? float(max_grad_norm / (norm + 1e-6)) : 1.0f;
  ++steps_;
  const AdamWConfig& c = context_.adam_config;
  const double bias1 = 1.0 - std::pow(c.beta1, double(steps_));
  const double bias2 = 1.0 - std::pow(c.beta2, double(steps_));
  args.step_size = float(lr / bias1);
  args.bias2_sqrt = float(std::sqrt(bias2));
  args.beta1 = float(c.beta1);
  args.beta2 = float(c.beta2);
  args.eps = float(c.eps);
  const float decay = float(1.0 - lr * c.weight_decay);
  for (size_t k = 0; k < offsets_.size(); ++k) {
    args.decay = decays_[k] ? decay : 1.0f;
    const size_t at = offsets_[k];
    gpu::adamw_step(param(at), m_.as<float>() + at, v_buf_.as<float>() + at, grad(at), sizes_[k], args, stream_);
  }
  gpu::f32_to_bf16(params_.as<float>(), params_bf16_.as<uint16_t>(), total_, stream_);
  QED_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return norm;
}

}  // namespace

std::unique_ptr<HeadStep> make_cuda_head_step(const HeadStepContext& context, const CudaHeadStepOptions& options) {
  return std::make_unique<CudaHeadStep>(context, options);
}

}  // namespace qed::train
