#include "server/openai_response.h"

#include <algorithm>

namespace qed::server {

using nlohmann::json;

std::string dump_json(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_event(const json& value) {
  return "data: " + dump_json(value) + "\n\n";
}

json finish_reason_json(FinishReason reason) {
  switch (reason) {
    case FinishReason::None:
      return nullptr;
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::Abort:
      return "abort";
    case FinishReason::Error:
      return "error";
  }
  return nullptr;
}

json stop_reason_json(const Tokenizer& tokenizer, const SamplingParams& params, const std::vector<int32_t>& generated,
                      const std::string& emitted, FinishReason reason) {
  if (reason != FinishReason::Stop || generated.empty()) return nullptr;
  const int32_t last = generated.back();
  if (std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), last) != params.stop_token_ids.end()) {
    return last;
  }
  if (params.stop.empty()) return nullptr;
  // The engine emits text up to the start of the matched stop string; the full decode continues with it.
  const std::string full = tokenizer.decode(generated, params.skip_special_tokens);
  const std::string* best = nullptr;
  size_t best_pos = std::string::npos;
  for (const auto& stop : params.stop) {
    if (full.compare(std::min(emitted.size(), full.size()), stop.size(), stop) == 0) return stop;
    // Fallback when the incremental and full decodes disagree: the stop string nearest the emitted end.
    const size_t from = emitted.size() > stop.size() ? emitted.size() - stop.size() : 0;
    const size_t pos = full.find(stop, from);
    if (pos < best_pos) {
      best_pos = pos;
      best = &stop;
    }
  }
  return best ? json(*best) : json(nullptr);
}

json usage_json(int prompt_tokens, int completion_tokens, int cached_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

std::string LogprobFormatter::token_text(int32_t id) const {
  const int32_t one[1] = {id};
  return tokenizer_.decode(one, /*skip_special_tokens=*/false);
}

json LogprobFormatter::completion(std::span<const SampledToken> tokens, size_t& offset) const {
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const SampledToken& t : tokens) {
    const std::string text = token_text(t.token);
    out["tokens"].push_back(text);
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    top[text] = t.logprob;  // vLLM lists the sampled token among the alternatives
    for (const TokenLogprob& alt : t.top) top[token_text(alt.token)] = alt.logprob;
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(offset);
    offset += text.size();
  }
  return out;
}

json LogprobFormatter::chat(std::span<const SampledToken> tokens, int top_logprobs) const {
  auto entry = [&](int32_t id, float logprob) {
    const std::string text = token_text(id);
    json bytes = json::array();
    for (unsigned char c : tokenizer_.token_bytes(id)) bytes.push_back(int(c));
    return json{{"token", text}, {"logprob", logprob}, {"bytes", std::move(bytes)}};
  };
  json content = json::array();
  for (const SampledToken& t : tokens) {
    json item = entry(t.token, t.logprob);
    json top = json::array();
    for (size_t i = 0; i < t.top.size() && int(i) < top_logprobs; ++i)
      top.push_back(entry(t.top[i].token, t.top[i].logprob));
    item["top_logprobs"] = std::move(top);
    content.push_back(std::move(item));
  }
  return {{"content", std::move(content)}};
}

}  // namespace qed::server
