#pragma once
// Pieces of OpenAI/vLLM response bodies: finish and stop reasons, logprobs in the completions and chat shapes,
// usage, SSE framing. JSON text is always dumped with invalid UTF-8 replaced (a token may end mid-character).
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "backend/sampling.h"
#include "engine/sequence.h"
#include "tokenizer/tokenizer.h"

namespace qed::server {

std::string dump_json(const nlohmann::json& value);
std::string sse_event(const nlohmann::json& value);  // "data: {...}\n\n"
inline const char* sse_done() {
  return "data: [DONE]\n\n";
}

// "stop", "length", "abort" (nullptr while unfinished).
nlohmann::json finish_reason_json(FinishReason reason);

// vLLM's `stop_reason`: the stop string that ended the sequence, or the stop token id from `stop_token_ids`, or
// null (EOS, length). `generated` are the sequence's token ids (a final stop token included) and `emitted` the text
// it produced (which ends right before a matched stop string).
nlohmann::json stop_reason_json(const Tokenizer& tokenizer, const SamplingParams& params,
                                const std::vector<int32_t>& generated, const std::string& emitted, FinishReason reason);

nlohmann::json usage_json(int prompt_tokens, int completion_tokens, int cached_tokens);

class LogprobFormatter {
 public:
  explicit LogprobFormatter(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // /v1/completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; `offset` is the text offset of
  // the first token and is advanced past these tokens.
  nlohmann::json completion(std::span<const SampledToken> tokens, size_t& offset) const;
  // /v1/chat/completions: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
  nlohmann::json chat(std::span<const SampledToken> tokens, int top_logprobs) const;

 private:
  std::string token_text(int32_t id) const;
  const Tokenizer& tokenizer_;
};

}  // namespace qed::server
