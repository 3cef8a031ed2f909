#include "server/openai_protocol.h"

#include <gtest/gtest.h>

namespace qed::server {
namespace {

using nlohmann::json;

ServerLimits limits() {
  return ServerLimits{};
}

int status_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    return e.status();
  }
  return 0;
}

std::string param_of(const json& body, bool chat = false) {
  try {
    chat ? parse_chat_request(body, limits()) : parse_completion_request(body, limits());
  } catch (const ApiError& e) {
    return e.param();
  }
  return "<accepted>";
}

TEST(CompletionRequest, NeMoSkillsClientBodyIsAccepted) {
  // The body NeMo-Skills' OpenAI client sends (facts file §4.1).
  json body = {{"model", "m"},
               {"prompt", "2+2="},
               {"max_tokens", 32},
               {"temperature", 0.7},
               {"top_p", 0.95},
               {"seed", 3},
               {"stop", nullptr},
               {"logprobs", nullptr},
               {"stream", false},
               {"echo", false},
               {"skip_special_tokens", false},
               {"n", 1},
               {"logit_bias", nullptr},
               {"frequency_penalty", 0},
               {"presence_penalty", 0},
               {"min_p", 0.05},
               {"repetition_penalty", 1.1},
               {"spaces_between_special_tokens", false},
               {"top_k", 20}};
  GenerationRequest req = parse_completion_request(body, limits());
  EXPECT_EQ(std::get<std::string>(req.prompt), "2+2=");
  EXPECT_EQ(req.params.max_tokens, 32);
  EXPECT_FLOAT_EQ(req.params.temperature, 0.7f);
  EXPECT_FLOAT_EQ(req.params.top_p, 0.95f);
  EXPECT_EQ(req.params.top_k, 20);
  EXPECT_FLOAT_EQ(req.params.min_p, 0.05f);
  EXPECT_FLOAT_EQ(req.params.repetition_penalty, 1.1f);
  EXPECT_EQ(req.params.seed, 3u);
  EXPECT_FALSE(req.params.skip_special_tokens);
  EXPECT_FALSE(req.spaces_between_special_tokens);
  EXPECT_EQ(req.params.logprobs, -1);
}

TEST(CompletionRequest, TokenIdPromptsAndDefaults) {
  GenerationRequest req = parse_completion_request({{"prompt", {1, 2, 3}}}, limits());
  EXPECT_EQ(std::get<std::vector<int32_t>>(req.prompt), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(req.params.max_tokens, 16);  // OpenAI/vLLM default for completions
  EXPECT_EQ(req.params.top_k, 0);
  req = parse_completion_request({{"prompt", json::array({json::array({5, 6})})}}, limits());
  EXPECT_EQ(std::get<std::vector<int32_t>>(req.prompt), (std::vector<int32_t>{5, 6}));
  req = parse_completion_request({{"prompt", "x"}, {"max_completion_tokens", 7}, {"max_tokens", 3}}, limits());
  EXPECT_EQ(req.params.max_tokens, 7);
}

TEST(CompletionRequest, StopAcceptsStringOrList) {
  EXPECT_EQ(parse_completion_request({{"prompt", "x"}, {"stop", "</tool_call>"}}, limits()).params.stop,
            (std::vector<std::string>{"</tool_call>"}));
  EXPECT_EQ(parse_completion_request({{"prompt", "x"}, {"stop", {"a", "b"}}}, limits()).params.stop,
            (std::vector<std::string>{"a", "b"}));
}

TEST(CompletionRequest, InvalidFieldsAreNamedIn400) {
  EXPECT_EQ(param_of({{"max_tokens", 5}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", ""}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"temperature", -1}}), "temperature");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"temperature", "hot"}}), "temperature");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"top_p", 0}}), "top_p");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"top_p", 1.5}}), "top_p");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"n", 0}}), "n");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"n", 100000}}), "n");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"max_tokens", -5}}), "max_tokens");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"max_tokens", 1.5}}), "max_tokens");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logprobs", 21}}), "logprobs");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logprobs", true}}), "logprobs");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stop", {"a", 1}}}), "stop");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stop", ""}}), "stop");
  EXPECT_EQ(param_of({{"prompt", {1, -2}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", {"a", "b"}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"repetition_penalty", 0}}), "repetition_penalty");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"frequency_penalty", 0.5}}), "frequency_penalty");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logit_bias", {{"5", 1}}}}), "logit_bias");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream_options", {{"include_usage", true}}}}), "stream_options");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"qed", {{"consensus", 0}}}}), "consensus");
}

TEST(ChatRequest, MessagesAndLogprobs) {
  json body = {{"messages",
                {{{"role", "system"}, {"content", "be brief"}},
                 {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi"}}}}}}},
               {"logprobs", true},
               {"top_logprobs", 3},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"tools", {{{"type", "code_interpreter"}}}},
               {"chat_template_kwargs", {{"enable_thinking", false}}}};
  GenerationRequest req = parse_chat_request(body, limits());
  ASSERT_EQ(req.messages.size(), 2u);
  EXPECT_EQ(req.messages[1].content, "hi");
  EXPECT_EQ(req.params.logprobs, 3);
  EXPECT_TRUE(req.stream);
  EXPECT_TRUE(req.include_usage);
  EXPECT_TRUE(req.tools.enabled);
  EXPECT_EQ(req.enable_thinking, false);
}

TEST(ChatRequest, InvalidMessagesAre400) {
  EXPECT_EQ(param_of({{"messages", json::array()}}, true), "messages");
  EXPECT_EQ(param_of({{"messages", {{{"content", "no role"}}}}}, true), "messages");
  EXPECT_EQ(param_of({{"messages", {{{"role", "user"}, {"content", 5}}}}}, true), "messages");
  EXPECT_EQ(param_of({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"top_logprobs", 2}}, true),
            "top_logprobs");
}

TEST(JsonBody, MalformedOrNonObjectIs400) {
  EXPECT_EQ(status_of([] { parse_json_body("{\"prompt\": "); }), 400);
  EXPECT_EQ(status_of([] { parse_json_body("[1,2]"); }), 400);
  EXPECT_EQ(status_of([] { parse_json_body("\xff\xfe"); }), 400);
  EXPECT_EQ(status_of([] { parse_json_body("{\"a\": 1}"); }), 0);
}

TEST(ApiError, OpenAiErrorShape) {
  ApiError e(400, "bad thing", "temperature");
  json j = e.to_json();
  EXPECT_EQ(j["error"]["message"], "bad thing");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_EQ(j["error"]["code"], 400);
  EXPECT_EQ(ApiError(429, "slow down").to_json()["error"]["param"], nullptr);
}

}  // namespace
}  // namespace qed::server
