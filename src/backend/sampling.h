#pragma once
// Sampling parameters of a request and the CPU reference sampler (the oracle GPU sampling is tested against).
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace qed {

struct SamplingParams {
  // --- per-token sampling (backend) ---
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;
  int top_k = 0;  // 0 = off
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // HF/vLLM semantics over prompt + generated tokens
  std::optional<uint64_t> seed;     // same seed → same tokens, independent of batching
  int logprobs = -1;                // -1: none; 0: chosen token only; k: plus top-k alternatives
  // --- per-request control (engine) ---
  int n = 1;
  int max_tokens = 16;
  bool ignore_eos = false;
  std::vector<std::string> stop;  // matched on detokenized text, not emitted
  // Matched like `stop`, but kept in the text, and the sequence pauses with its KV cache kept (TokenEvent::held)
  // until Engine::resume appends tokens (a tool's output) and decoding continues, or Engine::stop_held ends it.
  std::vector<std::string> hold;
  std::vector<int32_t> stop_token_ids;  // in addition to the model's EOS ids
  bool skip_special_tokens = true;
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;           // log-softmax of the raw logits (as vLLM reports), if requested
  std::vector<TokenLogprob> top;  // top-k alternatives by raw logprob, if requested
};

// The random stream of a sequence: draw `step` (0-based index of the generated token) of seed `seed`.
// Counter-based so a sequence's tokens do not depend on what else is in the batch.
double sampling_uniform(uint64_t seed, uint64_t step);

// Throws qed::Error naming the first out-of-range per-token parameter (temperature < 0, top_p outside (0, 1], ...).
void check_sampling_params(const SamplingParams& params);

// Applies repetition penalty, temperature, top-k, top-p and min-p to `logits` in place, in that order (as HF's
// logits processors): filtered-out entries become -inf. Greedy (temperature <= 0) applies the penalty only.
void process_logits(std::span<float> logits, const SamplingParams& params, std::span<const int32_t> history);

// Applies repetition penalty, temperature, top-k, top-p, min-p (in that order, as HF/vLLM) to `logits` and draws
// one token with sampling_uniform(seed, step). `history` = prompt + generated tokens (for repetition penalty).
SampledToken sample_token(std::span<const float> logits, const SamplingParams& params, uint64_t seed, uint64_t step,
                          std::span<const int32_t> history);

}  // namespace qed
