#pragma once
// Token sampling on the GPU: temperature, top-k, top-p, min-p (in that order, HF's logits processors), a draw from
// the same counter-based stream as the CPU sampler (sampling_uniform(seed, step)), and logprobs. sample_token() in
// backend/sampling.h is the reference: a seed gives the same token on both wherever the two agree on the
// probabilities (they differ only in double-precision summation order). Repetition penalty is not done here: it
// needs each sequence's history, so requests that use it are sampled on the host.
#include <cuda_runtime.h>

#include <cstdint>

namespace qed::cuda {

constexpr int kMaxTopLogprobs = 20;  // as vLLM's default max_logprobs

struct SamplingRowParams {
  int32_t row = 0;           // logits row to draw from (forked samples share one)
  float temperature = 1.0f;  // <= 0: greedy
  float top_p = 1.0f;
  float min_p = 0.0f;
  int32_t top_k = 0;
  int32_t logprobs = -1;  // -1 none, 0 chosen token only, k <= kMaxTopLogprobs: plus the top k
  uint64_t seed = 0;
  uint64_t step = 0;
};

struct SampledRow {
  int32_t token = -1;
  float logprob = 0.0f;  // log-softmax of the raw logits, when logprobs >= 0
  int32_t top_tokens[kMaxTopLogprobs];
  float top_logprobs[kMaxTopLogprobs];
};

// One CTA per sample: sample i draws from logits row params[i].row (logits: rows × vocab fp32, device). params
// and out are device arrays of `samples`; work is a device scratch of samples × vocab floats (filtered logits).
void sample_rows(const float* logits, int samples, int vocab, const SamplingRowParams* params, float* work,
                 SampledRow* out, cudaStream_t stream);

}  // namespace qed::cuda
