#pragma once
// The OpenAI-compatible API over an EngineService: /v1/completions, /v1/chat/completions (streamed as SSE or not),
// /v1/models, /tokenize, /health, /metrics, /openapi.json. Request shapes follow vLLM (what the `openai` package and
// NeMo-Skills send); errors are OpenAI's error JSON.
#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "server/engine_service.h"
#include "server/http/router.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"
#include "server/tir_session.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace qed::server {

struct ServeConfig {
  std::string model_dir;
  std::string served_model_name;  // the model id clients name; requests naming another model get 404
  std::string api_key;            // non-empty: /v1/* require "Authorization: Bearer <key>"
  int max_queue = 512;            // requests in flight at most; more are answered 503 (bounded memory)
  ServerLimits limits;
  TirContext tir;  // server-side tool-integrated reasoning (`--sandbox URL`)
};

class OpenAiServer {
 public:
  // `tokenizer`, `chat_template` and `engine` must outlive the server. No chat template: chat requests get 400.
  OpenAiServer(ServeConfig config, const Tokenizer& tokenizer, const ChatTemplate* chat_template, EngineService& engine,
               int max_model_len);
  http::Router router();

  struct Generation;  // one request's lifecycle (openai_server.cpp)

 private:
  void generate(const http::Request& request, http::Respond respond, Endpoint endpoint);
  http::Response models() const;
  http::Response tokenize(const http::Request& request) const;
  http::Response metrics() const;
  void check_api_key(const http::Request& request) const;
  std::vector<int32_t> prompt_tokens(const GenerationRequest& req, std::string& prompt_text) const;
  http::Response error_response(const ApiError& error) const;

  ServeConfig config_;
  const Tokenizer& tokenizer_;
  const ChatTemplate* chat_template_;
  EngineService& engine_;
  int max_model_len_;
  int64_t created_;  // unix time of start: /v1/models' `created`
  std::shared_ptr<ServerMetrics> metrics_;
  std::shared_ptr<std::atomic<int>> in_flight_;
};

}  // namespace qed::server
