#pragma once
// One sequence, no scheduler: prefill the prompt, then decode token by token with blocks 0, 1, 2, ... of the
// backend's KV cache. What `qed generate` runs; the paged Engine must produce the same tokens for the same seed.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/sampling.h"

namespace qed {

struct GenerationResult {
  std::vector<int32_t> tokens;        // generated tokens (an EOS/stop token that ended generation included)
  std::vector<SampledToken> sampled;  // per generated token, with logprobs when asked for
  std::string finish_reason;          // "stop" (EOS or stop token) or "length" (max_tokens)
};

class SimpleGenerator {
 public:
  explicit SimpleGenerator(Backend& backend) : backend_(backend) {}

  // `seed` drives sampling (params.seed is the caller's choice of it). `on_token` sees each token as it is sampled.
  GenerationResult generate(std::span<const int32_t> prompt, const SamplingParams& params, uint64_t seed,
                            const std::function<void(int32_t)>& on_token = {});

 private:
  Backend& backend_;
};

}  // namespace qed
