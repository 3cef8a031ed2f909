#pragma once
// The CUDA kernels of the draft-head trainer (train/cuda/cuda_head_step.h), each the device twin of a loop in
// train/redrafter_loss.cpp or train/adamw.cpp (their CPU references). fp32 arithmetic throughout; bf16 only where a
// value becomes a GEMM operand. Matrices are row-major; bf16 values are passed as their uint16_t bits.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace qed::train::gpu {

inline constexpr int32_t kIgnoreTarget = -100;

// out[r] = bf16 table[tokens[r · stride + column]] (rows × hidden): the embeddings of one iteration's inputs.
void gather_embeddings_bf16(const uint16_t* table, const int32_t* tokens, int stride, int column, uint16_t* out,
                            int rows, int hidden, cudaStream_t stream);

// One iteration's state update and the head input context ⊕ state, rows × hidden each.
// rnn: pre (in: rnn_w e + rnn_u s_prev, bias not yet added) += bias; state = SiLU(pre).
// !rnn: state = prev + e (prev null = 0; pre and bias unused).
// Writes state (fp32 and bf16) and input = context ⊕ state (rows × 2 hidden, fp32 and bf16).
void state_forward(bool rnn, float* pre, const float* bias, const float* prev, const uint16_t* embedding,
                   const float* context, float* state, uint16_t* state_bf16, float* input, uint16_t* input_bf16,
                   int rows, int hidden, cudaStream_t stream);

// The epilogue of a head linear whose product x Wᵀ is in pre (rows × cols):
// residual_in null (the input projection): out = pre + bias;
// else (a ResBlock): pre += bias (kept for the backward), out = residual_in + SiLU(pre).
// out is written fp32 and bf16; out may alias pre in the first form.
void linear_epilogue(float* pre, const float* bias, const float* residual_in, float* out, uint16_t* out_bf16, int rows,
                     int cols, cudaStream_t stream);

// Softmax cross-entropy of each row of logits (rows × vocab) against targets[r · stride + column] (kIgnoreTarget =
// no loss), one CTA per row: loss[r] = logsumexp − logit[target] (0 when ignored), rank[r] = logits strictly above
// the target's (−1 when ignored), and dlogits = weight · (softmax − onehot) in bf16 (0 on ignored rows).
void cross_entropy_rows(const float* logits, int rows, int vocab, const int32_t* targets, int stride, int column,
                        float weight, uint16_t* dlogits, float* loss, int32_t* rank, cudaStream_t stream);

// dy = dz ⊙ SiLU'(pre), n elements, written fp32 and bf16.
void silu_backward(const float* dz, const float* pre, float* dy, uint16_t* dy_bf16, size_t n, cudaStream_t stream);

// The gradient reaching one iteration's state: ds = dinput[:, hidden:] (rows × 2 hidden) + carry (rows × hidden,
// the gradient from the next iteration). rnn: dpre = ds ⊙ SiLU'(pre) (fp32 and bf16), carry untouched (the caller
// overwrites it with dpre · rnn_u); !rnn: carry = ds.
void state_backward(bool rnn, const float* dinput, float* carry, const float* pre, float* dpre, uint16_t* dpre_bf16,
                    int rows, int hidden, cudaStream_t stream);

// out[c] += Σ_r x[r][c] (rows × cols), summed in a fixed order (deterministic). partials: kColumnSumChunks × cols
// floats of scratch.
inline constexpr int kColumnSumChunks = 32;
void column_sum_add(const float* x, int rows, int cols, float* partials, float* out, cudaStream_t stream);

void f32_to_bf16(const float* x, uint16_t* out, size_t n, cudaStream_t stream);

// partials[b] = Σ x² over block b's grid-stride share, in double; the caller sums the kSquareSumBlocks partials.
inline constexpr int kSquareSumBlocks = 256;
void sum_squares(const float* x, size_t n, double* partials, cudaStream_t stream);

// torch.optim.AdamW on n elements, as train::AdamW::step does it, with the clipping factor applied to the gradient
// first: g' = g · grad_scale; p *= decay; m = β1 m + (1−β1) g'; v = β2 v + (1−β2) g'²;
// p −= step_size · m / (√v / bias2_sqrt + eps). Every operation rounded as on the CPU (no FMA contraction).
struct AdamWStepArgs {
  float grad_scale = 1.0f;
  float decay = 1.0f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float step_size = 0.0f;
  float bias2_sqrt = 1.0f;
};
void adamw_step(float* param, float* m, float* v, const float* grad, size_t n, const AdamWStepArgs& args,
                cudaStream_t stream);

}  // namespace qed::train::gpu
