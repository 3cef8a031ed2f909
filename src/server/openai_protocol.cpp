#include "server/openai_protocol.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace qed::server {

using nlohmann::json;

ApiError::ApiError(int status, std::string message, std::string param, std::string type)
    : std::runtime_error(std::move(message)), status_(status), type_(std::move(type)), param_(std::move(param)) {
  if (type_.empty()) {
    type_ = status == 401   ? "authentication_error"
            : status == 404 ? "not_found_error"
            : status == 429 ? "rate_limit_error"
            : status >= 500 ? "server_error"
                            : "invalid_request_error";
  }
}

json ApiError::to_json() const {
  json error = {{"message", what()}, {"type", type_}, {"code", status_}};
  error["param"] = param_.empty() ? json(nullptr) : json(param_);
  return {{"error", error}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param);
}

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double number_field(const json& body, const char* name, double fallback, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) bad(name, fmt::format("'{}' must be a number", name));
  double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, x));
  return x;
}

int64_t int_field(const json& body, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number_integer() && !(v->is_number_float() && std::floor(v->get<double>()) == v->get<double>())) {
    bad(name, fmt::format("'{}' must be an integer", name));
  }
  double x = v->get<double>();
  if (x < double(lo) || x > double(hi)) bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, x));
  return int64_t(x);
}

bool bool_field(const json& body, const char* name, bool fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_boolean()) bad(name, fmt::format("'{}' must be a boolean", name));
  return v->get<bool>();
}

std::string string_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return {};
  if (!v->is_string()) bad(name, fmt::format("'{}' must be a string", name));
  return v->get<std::string>();
}

std::vector<int32_t> token_ids(const json& value, const char* name) {
  std::vector<int32_t> ids;
  for (const auto& id : value) {
    if (!id.is_number_integer()) bad(name, fmt::format("'{}' must be a string or a list of token ids", name));
    int64_t v = id.get<int64_t>();
    if (v < 0 || v > std::numeric_limits<int32_t>::max()) bad(name, fmt::format("token id {} out of range", v));
    ids.push_back(int32_t(v));
  }
  return ids;
}

// Fields shared by both endpoints: sampling, stops, streaming, qed extensions.
void parse_common(const json& body, const ServerLimits& limits, GenerationRequest& req) {
  req.model = string_field(body, "model");
  SamplingParams& p = req.params;
  p.temperature = float(number_field(body, "temperature", 1.0, 0.0, 100.0));
  p.top_p = float(number_field(body, "top_p", 1.0, 0.0, 1.0));
  if (field(body, "top_p") && p.top_p <= 0.0f) bad("top_p", "'top_p' must be in (0, 1]");
  int64_t top_k = int_field(body, "top_k", -1, -1, std::numeric_limits<int32_t>::max());
  p.top_k = top_k <= 0 ? 0 : int(top_k);  // vLLM: -1 (and 0) disable
  p.min_p = float(number_field(body, "min_p", 0.0, 0.0, 1.0));
  p.repetition_penalty = float(number_field(body, "repetition_penalty", 1.0, 0.0, 100.0));
  if (p.repetition_penalty <= 0.0f) bad("repetition_penalty", "'repetition_penalty' must be > 0");
  if (field(body, "seed")) {
    p.seed = uint64_t(
        int_field(body, "seed", 0, std::numeric_limits<int64_t>::min() / 2, std::numeric_limits<int64_t>::max() / 2));
  }
  p.n = int(int_field(body, "n", 1, 1, limits.max_n));
  int64_t max_tokens = int_field(body, "max_tokens", -1, 1, std::numeric_limits<int32_t>::max());
  int64_t max_completion = int_field(body, "max_completion_tokens", -1, 1, std::numeric_limits<int32_t>::max());
  p.max_tokens = int(max_completion > 0 ? max_completion : max_tokens > 0 ? max_tokens : limits.default_max_tokens);
  p.ignore_eos = bool_field(body, "ignore_eos", false);
  p.skip_special_tokens = bool_field(body, "skip_special_tokens", true);
  req.spaces_between_special_tokens = bool_field(body, "spaces_between_special_tokens", true);
  req.include_stop_str_in_output = bool_field(body, "include_stop_str_in_output", false);
  req.return_token_ids = bool_field(body, "return_token_ids", false);

  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      p.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const auto& s : *stop) {
        if (!s.is_string()) bad("stop", "'stop' must be a string or a list of strings");
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or a list of strings");
    }
    if (int(p.stop.size()) > limits.max_stop_strings) {
      bad("stop", fmt::format("at most {} stop strings", limits.max_stop_strings));
    }
    for (const auto& s : p.stop) {
      if (s.empty()) bad("stop", "stop strings must not be empty");
    }
  }
  if (const json* ids = field(body, "stop_token_ids")) {
    if (!ids->is_array()) bad("stop_token_ids", "'stop_token_ids' must be a list of token ids");
    p.stop_token_ids = token_ids(*ids, "stop_token_ids");
  }

  // Accepted at their neutral values (the NeMo-Skills client always sends them); anything else is not supported.
  for (const char* name : {"frequency_penalty", "presence_penalty"}) {
    if (number_field(body, name, 0.0, -2.0, 2.0) != 0.0) bad(name, fmt::format("'{}' is not supported", name));
  }
  if (const json* bias = field(body, "logit_bias"); bias && !bias->empty()) {
    bad("logit_bias", "'logit_bias' is not supported");
  }

  req.stream = bool_field(body, "stream", false);
  if (const json* options = field(body, "stream_options")) {
    if (!options->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!req.stream) bad("stream_options", "'stream_options' is only allowed with stream=true");
    req.include_usage = bool_field(*options, "include_usage", false);
  }

  if (const json* tools = field(body, "tools")) {
    if (!tools->is_array()) bad("tools", "'tools' must be a list");
    for (const auto& tool : *tools) {
      if (!tool.is_object() || !tool.contains("type") || !tool["type"].is_string()) {
        bad("tools", "each tool must be an object with a string 'type'");
      }
      if (tool["type"] == "code_interpreter") req.tools.enabled = true;
    }
  }
  if (const json* ext = field(body, "qed")) {
    if (!ext->is_object()) bad("qed", "'qed' must be an object");
    req.tools.enabled = bool_field(*ext, "tir", req.tools.enabled);
    req.tools.max_code_executions = int(int_field(*ext, "max_code_executions", req.tools.max_code_executions, 0, 64));
    req.tools.code_timeout_s = number_field(*ext, "code_timeout_s", req.tools.code_timeout_s, 0.1, 600.0);
    req.tools.max_code_output_chars =
        int(int_field(*ext, "max_code_output_chars", req.tools.max_code_output_chars, 1, 1 << 20));
    req.tools.total_code_time_s = number_field(*ext, "total_code_time_s", req.tools.total_code_time_s, 0, 1e6);
    req.tools.add_remaining_code_executions =
        bool_field(*ext, "add_remaining_code_executions", req.tools.add_remaining_code_executions);
    if (field(*ext, "time_budget_s")) req.early_stop.time_budget_s = number_field(*ext, "time_budget_s", 0, 0, 1e6);
    if (field(*ext, "stop_after_first")) {
      req.early_stop.stop_after_first = int(int_field(*ext, "stop_after_first", 0, 1, limits.max_n));
    }
    if (field(*ext, "consensus")) req.early_stop.consensus = int(int_field(*ext, "consensus", 0, 1, limits.max_n));
  }
}

}  // namespace

json parse_json_body(const std::string& body) {
  json parsed;
  try {
    parsed = json::parse(body);
  } catch (const json::parse_error& e) {
    throw ApiError(400, fmt::format("malformed JSON body: {}", e.what()));
  }
  if (!parsed.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return parsed;
}

GenerationRequest parse_completion_request(const json& body, const ServerLimits& limits) {
  GenerationRequest req;
  req.endpoint = Endpoint::Completions;
  const json* prompt = field(body, "prompt");
  if (!prompt) bad("prompt", "'prompt' is required");
  if (prompt->is_string()) {
    req.prompt = prompt->get<std::string>();
  } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
    req.prompt = (*prompt)[0].get<std::string>();  // a batch of one prompt
  } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_array()) {
    req.prompt = token_ids((*prompt)[0], "prompt");
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number_integer()) {
    req.prompt = token_ids(*prompt, "prompt");
  } else if (prompt->is_array() && prompt->size() > 1) {
    bad("prompt", "batched prompts are not supported: send one prompt per request (use n for samples)");
  } else {
    bad("prompt", "'prompt' must be a non-empty string or list of token ids");
  }
  if (const auto* text = std::get_if<std::string>(&req.prompt); text && text->empty()) {
    bad("prompt", "'prompt' must not be empty");
  }
  parse_common(body, limits, req);
  req.echo = bool_field(body, "echo", false);
  if (const json* lp = field(body, "logprobs")) {
    if (lp->is_boolean()) bad("logprobs", "'logprobs' must be an integer for /v1/completions");
    req.params.logprobs = int(int_field(body, "logprobs", -1, 0, limits.max_logprobs));
  }
  return req;
}

GenerationRequest parse_chat_request(const json& body, const ServerLimits& limits) {
  GenerationRequest req;
  req.endpoint = Endpoint::ChatCompletions;
  const json* messages = field(body, "messages");
  if (!messages || !messages->is_array() || messages->empty()) bad("messages", "'messages' must be a non-empty list");
  for (const auto& m : *messages) {
    if (!m.is_object()) bad("messages", "each message must be an object");
    ChatMessage message;
    message.role = string_field(m, "role");
    if (message.role.empty()) bad("messages", "each message needs a 'role'");
    const json* content = field(m, "content");
    if (content && content->is_string()) {
      message.content = content->get<std::string>();
    } else if (content && content->is_array()) {
      // Content parts: only text parts are meaningful to a text model.
      for (const auto& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          bad("messages", "only text content parts are supported");
        }
        message.content += part["text"].get<std::string>();
      }
    } else if (content) {
      bad("messages", "message 'content' must be a string or a list of text parts");
    }
    if (const json* reasoning = field(m, "reasoning_content")) {
      if (!reasoning->is_string()) bad("messages", "'reasoning_content' must be a string");
      message.reasoning_content = reasoning->get<std::string>();
    }
    req.messages.push_back(std::move(message));
  }
  parse_common(body, limits, req);
  req.add_generation_prompt = bool_field(body, "add_generation_prompt", true);
  if (const json* kwargs = field(body, "chat_template_kwargs")) {
    if (!kwargs->is_object()) bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    if (field(*kwargs, "enable_thinking")) req.enable_thinking = bool_field(*kwargs, "enable_thinking", true);
  }
  bool logprobs = bool_field(body, "logprobs", false);
  req.top_logprobs = int(int_field(body, "top_logprobs", 0, 0, limits.max_logprobs));
  if (field(body, "top_logprobs") && !logprobs) bad("top_logprobs", "'top_logprobs' requires logprobs=true");
  req.params.logprobs = logprobs ? req.top_logprobs : -1;
  return req;
}

}  // namespace qed::server
