#pragma once
// The reference ops of a Qwen2/Llama forward, fp32, plain loops over raw pointers. The CPU backend composes them;
// the CUDA kernels are tested against exactly these functions, so each computes what transformers computes, in the
// same order where the order changes the rounding (noted per op).
#include <cstdint>

#include "model/model_config.h"

namespace qed {

class ThreadPool;

namespace cpu {

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, rows × dim (HF Qwen2RMSNorm/LlamaRMSNorm in fp32).
// Dot product with eight partial sums in a fixed order: every reference op that multiplies (matmul, the quantized
// GEMMs) rounds the same way.
float dot(const float* a, const float* b, int n);

void rmsnorm(const float* x, const float* weight, float* out, int rows, int dim, float eps);

// residual += delta, then out = rmsnorm(residual): the "add previous sublayer output, normalise for the next" step.
void add_rmsnorm(float* residual, const float* delta, const float* weight, float* out, int rows, int dim, float eps);

// out[r][j] = sum_k x[r][k] * w[j][k] + bias[j] (bias may be null): x is rows × in, w is out_dim × in (the HF
// nn.Linear layout), out is rows × out_dim. Split over output features on `pool` when given.
void matmul(const float* x, const float* w, const float* bias, float* out, int rows, int in, int out_dim,
            ThreadPool* pool);

// out[r][i] = silu(gate[r][i]) * up[r][i], where gate_up holds rows × [gate (inter) | up (inter)].
void silu_and_mul(const float* gate_up, float* out, int rows, int inter);

// out[r] = table[ids[r]], rows of `dim` floats; ids must be in [0, vocab) (checked by the caller).
void embedding(const float* table, const int32_t* ids, float* out, int rows, int dim);

// In-place softmax over n floats (max-subtracted, fp32). Entries of -inf get probability 0.
void softmax(float* x, int n);

// RoPE inverse frequencies, head_dim / 2 of them: 1 / theta^(2i/d) in fp32 as transformers'
// _compute_default_rope_parameters, then _compute_llama3_parameters' smoothing when scaling.type == "llama3".
void rope_inv_freq(int head_dim, float theta, const RopeScaling& scaling, float* inv_freq);

// Rotates x (rows × num_heads × head_dim) in place at positions[r], HF's rotate_half convention: the pair of dims
// (i, i + head_dim/2) turns by angle positions[r] * inv_freq[i], computed in fp32.
void rope(float* x, const int32_t* positions, const float* inv_freq, int rows, int num_heads, int head_dim);

// Paged KV cache of one layer: K and V each [num_blocks][block_size][num_kv_heads][head_dim].
struct PagedKv {
  float* k = nullptr;
  float* v = nullptr;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

// Stores the K/V rows (rows × num_kv_heads × head_dim) of tokens at cache slots first_slot .. first_slot+rows-1 of
// the sequence whose blocks are block_table.
void write_kv(const PagedKv& cache, const int32_t* block_table, int first_slot, const float* k, const float* v,
              int rows);

// Attention of n new query tokens (q: n × num_heads × head_dim) of one sequence over its paged cache, which must
// already hold the new tokens' K/V at slots [num_cached, num_cached + n). Query i sees every cached slot
// [0, num_cached) and new token j when mask[i*n + j] != 0, or j <= i when mask is null (causal). Query head h reads
// KV head h / (num_heads / num_kv_heads) (GQA). scores = q·k * scale, softmax in fp32, out = n × num_heads ×
// head_dim. Split over (token, head) on `pool` when given.
void attention(const float* q, const PagedKv& cache, const int32_t* block_table, int num_cached, int n, int num_heads,
               const uint8_t* mask, float scale, float* out, ThreadPool* pool);

}  // namespace cpu
}  // namespace qed
