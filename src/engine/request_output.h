#pragma once
// What the engine reports: a TokenEvent per sequence per step in which it produced something, and a
// RequestResult when all of a request's sequences are finished.
#include <functional>
#include <string>
#include <vector>

#include "backend/sampling.h"
#include "engine/sequence.h"

namespace qed {

struct TokenEvent {
  RequestId request_id = 0;
  int index = 0;                     // sequence within the request (n > 1)
  std::vector<SampledToken> tokens;  // new tokens (logprobs filled if requested); empty on abort/error
  std::string text;                  // newly emitted text (stop strings and text after them never appear)
  // The sequence paused at a hold string (the text ends with it); Engine::resume or stop_held continues it.
  bool held = false;
  // Tokens appended by Engine::resume (not sampled, so not in `tokens`); `text` is their text.
  std::vector<int32_t> inserted_tokens;
  FinishReason finish_reason = FinishReason::None;
  std::string error;  // set with FinishReason::Error
  bool finished() const { return finish_reason != FinishReason::None; }
};

struct SequenceResult {
  int index = 0;
  // Tokens after the prompt, including a final EOS/stop token id and any inserted by Engine::resume.
  std::vector<int32_t> token_ids;
  int num_inserted_tokens = 0;  // of token_ids: appended by resume, not generated
  int num_holds = 0;            // times the sequence paused at a hold string
  std::string text;
  FinishReason finish_reason = FinishReason::None;
  std::vector<SampledToken> logprobs;  // per generated token, when params.logprobs >= 0
  std::vector<double> token_times_s;   // seconds since arrival at which each token was sampled
};

struct RequestResult {
  RequestId id = 0;
  std::vector<int32_t> prompt_token_ids;
  std::vector<SequenceResult> sequences;
  std::string error;
  double queue_s = 0;                // arrival → first scheduled
  double ttft_s = 0;                 // arrival → first token of any sequence
  double total_s = 0;                // arrival → last sequence finished
  int num_cached_prompt_tokens = 0;  // prompt tokens served by the prefix cache at (first) admission
};

struct RequestCallbacks {
  std::function<void(const TokenEvent&)> on_token;  // runs on the engine's thread; must not block long
  std::function<void(RequestResult&&)> on_finish;   // if set, the result is handed here instead of kept
};

}  // namespace qed
