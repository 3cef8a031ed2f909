#pragma once
// OpenAI-compatible request parsing/validation and response shapes for /v1/completions and /v1/chat/completions.
// Field names and defaults follow vLLM's protocol (what the NeMo-Skills client and the `openai` package send);
// anything invalid becomes an ApiError that the HTTP layer turns into OpenAI's error JSON with the right status.
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "backend/sampling.h"
#include "tokenizer/chat_template.h"

namespace qed::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string type = {});
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  nlohmann::json to_json() const;  // {"error": {"message", "type", "param", "code"}}

 private:
  int status_;
  std::string type_;
  std::string param_;
};

struct ServerLimits {
  int max_n = 128;
  int max_logprobs = 20;
  int max_stop_strings = 16;
  int max_model_len = 0;  // 0 = unchecked here (the engine checks prompt + max_tokens)
  int default_max_tokens = 16;
};

enum class Endpoint { Completions, ChatCompletions };

// A prompt is text or token ids (completions accept both).
using PromptInput = std::variant<std::string, std::vector<int32_t>>;

struct ToolIntegration {
  bool enabled = false;         // "tools": [{"type": "code_interpreter"}] or "qed": {"tir": true}
  int max_code_executions = 8;  // "qed": {"max_code_executions"}
  double code_timeout_s = 10.0;
  int max_code_output_chars = 1000;
  double total_code_time_s = 0;                // "qed": {"total_code_time_s"}: a sample's sandbox time, 0 = unlimited
  bool add_remaining_code_executions = false;  // NS's "Remaining code executions: N" notice after each output
};

struct EarlyStop {
  std::optional<double> time_budget_s;  // stop all samples at the deadline, return what exists
  std::optional<int> stop_after_first;  // stop once this many samples finished
  std::optional<int> consensus;         // stop once this many finished samples agree on \boxed{}
};

struct GenerationRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;
  PromptInput prompt;                   // completions
  std::vector<ChatMessage> messages;    // chat
  bool add_generation_prompt = true;    // chat
  std::optional<bool> enable_thinking;  // chat_template_kwargs.enable_thinking
  SamplingParams params;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;
  bool include_stop_str_in_output = false;
  bool return_token_ids = false;  // vLLM's: choices carry prompt_token_ids and token_ids (non-streaming)
  bool spaces_between_special_tokens = true;
  int top_logprobs = 0;  // chat: alternatives per token when logprobs=true
  ToolIntegration tools;
  EarlyStop early_stop;
};

// Throw ApiError(400, ...) naming the offending field.
GenerationRequest parse_completion_request(const nlohmann::json& body, const ServerLimits& limits);
GenerationRequest parse_chat_request(const nlohmann::json& body, const ServerLimits& limits);
// Parses body text; malformed JSON or a non-object → ApiError 400 with the parser's position.
nlohmann::json parse_json_body(const std::string& body);

}  // namespace qed::server
