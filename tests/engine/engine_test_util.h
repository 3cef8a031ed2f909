#pragma once
// Helpers shared by the engine tests: run requests to completion, alone or together, and compare outputs.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace qed::testing {

struct Job {
  std::vector<int32_t> prompt;
  SamplingParams params;
};

// Runs the engine until idle; results by request id.
std::map<RequestId, RequestResult> run_to_completion(Engine& engine);

// All jobs added at once to one engine; results in job order.
std::vector<RequestResult> run_batched(Engine& engine, const std::vector<Job>& jobs);

// Generated token ids of every sequence of every result, for token-exact comparisons.
std::vector<std::vector<int32_t>> generated_tokens(const std::vector<RequestResult>& results);

// Maps token t to 1-3 letters, so text boundaries fall inside and between tokens.
TokenDecoderFactory letter_decoder_factory();
std::string letters_of(int32_t token);

// A prompt of `length` tokens in [1, vocab) from `seed`.
std::vector<int32_t> random_prompt(uint64_t seed, int length, int vocab);

}  // namespace qed::testing
