#include "train/redrafter_loss.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/error.h"
#include "core/thread_pool.h"
#include "train/linear_grad.h"

namespace qed::train {
namespace {

using spec::RedrafterHead;

float sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}

void parallel(ThreadPool* pool, size_t n, const std::function<void(size_t, size_t)>& fn) {
  if (pool && n > 1) {
    pool->parallel_for(n, fn);
  } else {
    fn(0, n);
  }
}

// What the backward pass needs of one iteration's forward.
struct IterationActivations {
  std::vector<float> embedding;  // rows × h: E(x_{t+i+1})
  std::vector<float> pre_state;  // rows × h: rnn_w e + rnn_u s + b before the SiLU (rnn only)
  std::vector<float> state;      // rows × h: s_{t,i}
  std::vector<float> input;      // rows × 2h: context ⊕ state
  std::vector<std::vector<float>>
      z;  // num_draft_layers + 1 entries, rows × exit_dim: each ResBlock's input, then the last output
  std::vector<std::vector<float>> pre;  // num_draft_layers entries, rows × exit_dim: each ResBlock's linear output
  std::vector<float> logits;            // rows × vocab
};

std::vector<IterationActivations> forward(const RedrafterHead& head, const DraftRows& rows,
                                          std::span<const float> embeddings, ThreadPool* pool) {
  validate_draft_rows(head.config(), rows, embeddings.size());
  const spec::RedrafterConfig& c = head.config();
  const size_t h = size_t(c.hidden_size), e = size_t(c.exit_dim), v = size_t(c.vocab_size), r = rows.rows;
  const size_t n = size_t(rows.n_tokens);
  std::vector<IterationActivations> acts(n);
  std::vector<float> previous(r * h, 0.0f), recurrent(r * h);
  for (size_t i = 0; i < n; ++i) {
    IterationActivations& a = acts[i];
    a.embedding.resize(r * h);
    for (size_t row = 0; row < r; ++row) {
      const size_t token = size_t(rows.inputs[row * n + i]);
      std::copy_n(embeddings.data() + token * h, h, a.embedding.data() + row * h);
    }
    a.state.resize(r * h);
    if (c.rnn) {
      a.pre_state.resize(r * h);
      linear_forward(a.embedding.data(), head.rnn_w.weight.data(), nullptr, a.pre_state.data(), r, h, h, pool);
      linear_forward(previous.data(), head.rnn_u.weight.data(), head.rnn_u.bias.data(), recurrent.data(), r, h, h,
                     pool);
      for (size_t k = 0; k < r * h; ++k) {
        a.pre_state[k] += recurrent[k];
        a.state[k] = a.pre_state[k] * sigmoid(a.pre_state[k]);
      }
    } else {
      for (size_t k = 0; k < r * h; ++k) a.state[k] = previous[k] + a.embedding[k];
    }
    previous = a.state;
    a.input.resize(r * 2 * h);
    for (size_t row = 0; row < r; ++row) {
      std::copy_n(rows.context.data() + row * h, h, a.input.data() + row * 2 * h);
      std::copy_n(a.state.data() + row * h, h, a.input.data() + row * 2 * h + h);
    }
    a.z.resize(size_t(c.num_draft_layers) + 1);
    a.pre.resize(size_t(c.num_draft_layers));
    if (c.has_input_proj()) {
      a.z[0].resize(r * e);
      linear_forward(a.input.data(), head.input_proj.weight.data(), head.input_proj.bias.data(), a.z[0].data(), r,
                     2 * h, e, pool);
    } else {
      a.z[0] = a.input;
    }
    for (size_t l = 0; l < size_t(c.num_draft_layers); ++l) {
      const RedrafterHead::Linear& block = head.res_blocks[l];
      a.pre[l].resize(r * e);
      linear_forward(a.z[l].data(), block.weight.data(), block.bias.data(), a.pre[l].data(), r, e, e, pool);
      a.z[l + 1] = a.z[l];
      for (size_t k = 0; k < r * e; ++k) a.z[l + 1][k] += a.pre[l][k] * sigmoid(a.pre[l][k]);
    }
    a.logits.resize(r * v);
    linear_forward(a.z.back().data(), head.vocab_proj.weight.data(), nullptr, a.logits.data(), r, e, v, pool);
  }
  return acts;
}

struct RowResult {
  double ce = 0.0;
  int rank = 0;  // logits strictly above the target's
  bool valid = false;
};

// Cross-entropy and rank of each row's target; with `grad_weight` > 0 the logits are replaced by
// grad_weight × (softmax − onehot) on target rows and by 0 elsewhere (∂(mean CE)/∂logits, scaled).
std::vector<RowResult> cross_entropy(std::vector<float>& logits, const DraftRows& rows, size_t iteration, size_t vocab,
                                     bool want_grad, float grad_weight, ThreadPool* pool) {
  std::vector<RowResult> results(rows.rows);
  const size_t n = size_t(rows.n_tokens);
  parallel(pool, rows.rows, [&](size_t begin, size_t end) {
    for (size_t row = begin; row < end; ++row) {
      float* l = logits.data() + row * vocab;
      const int32_t target = rows.targets[row * n + iteration];
      if (target == kIgnoreLabel) {
        if (want_grad) std::fill(l, l + vocab, 0.0f);
        continue;
      }
      const float max = *std::max_element(l, l + vocab);
      double sum = 0.0;
      for (size_t j = 0; j < vocab; ++j) sum += std::exp(double(l[j]) - double(max));
      const double log_sum = double(max) + std::log(sum);
      const float target_logit = l[size_t(target)];
      RowResult& out = results[row];
      out.valid = true;
      out.ce = log_sum - double(target_logit);
      for (size_t j = 0; j < vocab; ++j) out.rank += l[j] > target_logit ? 1 : 0;
      if (want_grad) {
        for (size_t j = 0; j < vocab; ++j) l[j] = float(std::exp(double(l[j]) - log_sum)) * grad_weight;
        l[size_t(target)] -= grad_weight;
      }
    }
  });
  return results;
}

float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

}  // namespace

void validate_draft_rows(const spec::RedrafterConfig& c, const DraftRows& rows, size_t embedding_values) {
  const size_t h = size_t(c.hidden_size), n = size_t(rows.n_tokens);
  if (rows.n_tokens < 1) fail("redrafter loss: n_tokens must be >= 1, got {}", rows.n_tokens);
  if (rows.context.size() != rows.rows * h || rows.inputs.size() != rows.rows * n ||
      rows.targets.size() != rows.rows * n) {
    fail("redrafter loss: draft rows of inconsistent sizes");
  }
  if (embedding_values != size_t(c.vocab_size) * h) fail("redrafter loss: embedding table is not vocab × hidden");
  for (int32_t token : rows.inputs) {
    if (token < 0 || token >= c.vocab_size) fail("redrafter loss: input token {} outside the head's vocab", token);
  }
  for (int32_t target : rows.targets) {
    if (target != kIgnoreLabel && (target < 0 || target >= c.vocab_size)) {
      fail("redrafter loss: target {} outside the head's vocab {}", target, c.vocab_size);
    }
  }
}

std::vector<int32_t> draft_positions(const Example& example, int n_tokens) {
  std::vector<int32_t> positions;
  const size_t length = example.ids.size();
  for (size_t t = 0; t + 2 < length; ++t) {
    for (size_t i = 0; i < size_t(n_tokens) && t + i + 2 < length; ++i) {
      if (example.labels[t + i + 2] != kIgnoreLabel) {
        positions.push_back(int32_t(t));
        break;
      }
    }
  }
  return positions;
}

void append_draft_rows(const Example& example, std::span<const int32_t> positions, std::span<const float> hidden,
                       int hidden_size, DraftRows& rows) {
  const size_t h = size_t(hidden_size), length = example.ids.size(), n = size_t(rows.n_tokens);
  if (hidden.size() != positions.size() * h)
    fail("draft rows: {} hidden values for {} positions", hidden.size(), positions.size());
  if (example.labels.size() != length) fail("draft rows: {} labels for {} tokens", example.labels.size(), length);
  for (size_t p = 0; p < positions.size(); ++p) {
    const size_t t = size_t(positions[p]);
    if (t + 1 >= length) fail("draft rows: position {} has no next token in a sequence of {}", t, length);
    rows.context.insert(rows.context.end(), hidden.begin() + long(p * h), hidden.begin() + long((p + 1) * h));
    for (size_t i = 0; i < n; ++i) {
      rows.inputs.push_back(example.ids[std::min(t + i + 1, length - 1)]);
      rows.targets.push_back(t + i + 2 < length ? example.labels[t + i + 2] : kIgnoreLabel);
    }
    ++rows.rows;
  }
}

double DraftMetrics::total_loss() const {
  double sum = 0.0;
  for (double l : loss) sum += l;
  return sum;
}

std::vector<std::vector<float>> redrafter_logits(const RedrafterHead& head, const DraftRows& rows,
                                                 std::span<const float> embeddings, ThreadPool* pool) {
  std::vector<IterationActivations> acts = forward(head, rows, embeddings, pool);
  std::vector<std::vector<float>> logits;
  for (IterationActivations& a : acts) logits.push_back(std::move(a.logits));
  return logits;
}

DraftMetrics redrafter_loss(const RedrafterHead& head, const DraftRows& rows, std::span<const float> embeddings,
                            int top_k, RedrafterHead* grads, float grad_scale, ThreadPool* pool) {
  const spec::RedrafterConfig& c = head.config();
  if (grads && (grads->config().vocab_size != c.vocab_size || grads->config().hidden_size != c.hidden_size ||
                grads->config().exit_dim != c.exit_dim || grads->config().num_draft_layers != c.num_draft_layers ||
                grads->config().rnn != c.rnn)) {
    fail("redrafter loss: gradient head has another config");
  }
  std::vector<IterationActivations> acts = forward(head, rows, embeddings, pool);
  const size_t h = size_t(c.hidden_size), e = size_t(c.exit_dim), v = size_t(c.vocab_size), r = rows.rows;
  const size_t n = size_t(rows.n_tokens);
  DraftMetrics metrics;
  metrics.top_k = top_k;
  metrics.loss.assign(n, 0.0);
  metrics.targets.assign(n, 0);
  metrics.hits.assign(n, std::vector<int64_t>(size_t(std::max(top_k, 0)), 0));
  for (size_t i = 0; i < n; ++i) {
    for (size_t row = 0; row < r; ++row) metrics.targets[i] += rows.targets[row * n + i] != kIgnoreLabel ? 1 : 0;
  }

  std::vector<float> ds_carry(r * h, 0.0f), dz(r * e), dy(r * e), dinput(r * 2 * h), ds(r * h), dpre(r * h);
  const std::vector<float> zero_state(r * h, 0.0f);
  for (size_t step = 0; step < n; ++step) {
    const size_t i = n - 1 - step;  // backward runs the iterations in reverse: state gradients flow back in time
    IterationActivations& a = acts[i];
    const int64_t count = metrics.targets[i];
    const float weight = count > 0 ? grad_scale / float(count) : 0.0f;
    const std::vector<RowResult> results = cross_entropy(a.logits, rows, i, v, grads != nullptr, weight, pool);
    double ce_sum = 0.0;
    for (const RowResult& result : results) {
      if (!result.valid) continue;
      ce_sum += result.ce;
      for (int k = 1; k <= top_k; ++k) metrics.hits[i][size_t(k - 1)] += result.rank < k ? 1 : 0;
    }
    metrics.loss[i] = count > 0 ? ce_sum / double(count) : 0.0;
    if (!grads) continue;

    // a.logits now holds ∂loss/∂logits.
    linear_weight_grad(a.logits.data(), a.z.back().data(), grads->vocab_proj.weight.data(), nullptr, r, e, v, pool);
    linear_input_grad(a.logits.data(), head.vocab_proj.weight.data(), dz.data(), r, e, v, false, pool);
    for (size_t step_l = 0; step_l < size_t(c.num_draft_layers); ++step_l) {
      const size_t l = size_t(c.num_draft_layers) - 1 - step_l;
      for (size_t k = 0; k < r * e; ++k) dy[k] = dz[k] * silu_grad(a.pre[l][k]);
      RedrafterHead::Linear& g = grads->res_blocks[l];
      linear_weight_grad(dy.data(), a.z[l].data(), g.weight.data(), g.bias.data(), r, e, e, pool);
      linear_input_grad(dy.data(), head.res_blocks[l].weight.data(), dz.data(), r, e, e, true, pool);
    }
    if (c.has_input_proj()) {
      linear_weight_grad(dz.data(), a.input.data(), grads->input_proj.weight.data(), grads->input_proj.bias.data(), r,
                         2 * h, e, pool);
      linear_input_grad(dz.data(), head.input_proj.weight.data(), dinput.data(), r, 2 * h, e, false, pool);
    } else {
      dinput = dz;
    }
    for (size_t row = 0; row < r; ++row) {
      for (size_t k = 0; k < h; ++k) ds[row * h + k] = dinput[row * 2 * h + h + k] + ds_carry[row * h + k];
    }
    if (c.rnn) {
      for (size_t k = 0; k < r * h; ++k) dpre[k] = ds[k] * silu_grad(a.pre_state[k]);
      const std::vector<float>& previous = i > 0 ? acts[i - 1].state : zero_state;
      linear_weight_grad(dpre.data(), a.embedding.data(), grads->rnn_w.weight.data(), nullptr, r, h, h, pool);
      linear_weight_grad(dpre.data(), previous.data(), grads->rnn_u.weight.data(), grads->rnn_u.bias.data(), r, h, h,
                         pool);
      if (i > 0) linear_input_grad(dpre.data(), head.rnn_u.weight.data(), ds_carry.data(), r, h, h, false, pool);
    } else {
      ds_carry = ds;
    }
  }
  return metrics;
}

}  // namespace qed::train
