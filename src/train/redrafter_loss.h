#pragma once
// The ReDrafter training objective (apple/ml-recurrent-drafter train/model.py + train/loss.py), forward and
// backward written out in fp32 for the CPU.
//
// Teacher forcing over a token sequence x_0..x_{L-1} with the frozen base model's final-norm hidden states h_t:
// for each position t and iteration i = 0..n-1 the head sees context h_t and the state
//   s_{t,i} = SiLU(rnn_w · E(x_{t+i+1}) + rnn_u · s_{t,i-1} + b_u)   (rnn; s_{t,-1} = 0)   or   Σ_{j≤i} E(x_{t+j+1})
// and predicts x_{t+i+2}: exactly the inference beam search's first step from context h_t and init token x_{t+1},
// then its later steps along the true tokens. The loss is RD's Σ_i CrossEntropy_i, each the mean over the targets
// x_{t+i+2} whose label is not ignored (-100) in the batch, and redrafter{i}_top{k} is the top-k accuracy of
// iteration i. RD's logits are the raw lm_head output (no max shift, no top-50 warp: those are inference only).
#include <cstdint>
#include <span>
#include <vector>

#include "spec/redrafter_head.h"

namespace qed {
class ThreadPool;
}

namespace qed::train {

inline constexpr int32_t kIgnoreLabel = -100;  // transformers' LabelSmoother.ignore_index, as RD uses

// A tokenized training sequence. labels[t] is the target at position t: ids[t] where supervised, else -100.
struct Example {
  std::vector<int32_t> ids;
  std::vector<int32_t> labels;
};

// Positions t of `example` with at least one supervised target x_{t+i+2}, i < n_tokens: the only rows with a loss
// (a row's state chain is its own, so dropping the others changes nothing).
std::vector<int32_t> draft_positions(const Example& example, int n_tokens);

// The head's inputs for a batch of rows (one per (sequence, position)).
struct DraftRows {
  size_t rows = 0;
  int n_tokens = 0;
  std::vector<float> context;    // rows × hidden_size: h_t
  std::vector<int32_t> inputs;   // rows × n_tokens: x_{t+i+1} (clamped to the last token past the end)
  std::vector<int32_t> targets;  // rows × n_tokens: labels[t+i+2], or -100 past the end
};

// Appends the rows of `positions` of `example`; `hidden` holds their contexts, positions.size() × hidden_size.
void append_draft_rows(const Example& example, std::span<const int32_t> positions, std::span<const float> hidden,
                       int hidden_size, DraftRows& rows);

// Throws a one-line qed::Error unless `rows` fit a head of config `c` and an embedding table of vocab × hidden.
void validate_draft_rows(const spec::RedrafterConfig& c, const DraftRows& rows, size_t embedding_values);

struct DraftMetrics {
  int top_k = 0;
  std::vector<double> loss;                // per iteration: mean cross-entropy over its targets (0 without any)
  std::vector<int64_t> targets;            // per iteration: supervised targets
  std::vector<std::vector<int64_t>> hits;  // [i][k-1]: targets within iteration i's top k logits
  double total_loss() const;               // Σ_i loss[i], RD's training loss
};

// Loss and metrics of `head` on `rows`; when `grads` is non-null (a head of the same config) it also adds
// grad_scale × ∂loss/∂θ into grads' weights. `embeddings`: the base model's table, vocab_size × hidden_size.
DraftMetrics redrafter_loss(const spec::RedrafterHead& head, const DraftRows& rows, std::span<const float> embeddings,
                            int top_k, spec::RedrafterHead* grads, float grad_scale, ThreadPool* pool);

// The logits (rows × vocab_size) of every iteration, as the loss sees them: for the forward-equality tests.
std::vector<std::vector<float>> redrafter_logits(const spec::RedrafterHead& head, const DraftRows& rows,
                                                 std::span<const float> embeddings, ThreadPool* pool);

}  // namespace qed::train
