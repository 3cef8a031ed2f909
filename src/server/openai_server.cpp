#include "server/openai_server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <random>

#include "core/error.h"
#include "server/openai_response.h"
#include "server/openapi.h"

namespace qed::server {

using nlohmann::json;

namespace {

std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   uint64_t(std::hash<std::thread::id>{}(std::this_thread::get_id())));
  return fmt::format("{}-{:016x}{:016x}", prefix, rng(), rng());
}

bool explicit_field(const json& body, const char* name) {
  auto it = body.find(name);
  return it != body.end() && !it->is_null();
}

}  // namespace

// One request from parsing to its last byte. All callbacks run on the engine thread, one at a time.
struct OpenAiServer::Generation {
  struct Choice {
    std::vector<int32_t> tokens;
    std::string text;
    size_t text_offset = 0;  // completions logprobs: offset of the next token in the returned text
    FinishReason finish = FinishReason::None;
    json stop_reason = nullptr;
  };

  GenerationRequest req;
  std::string id;
  int64_t created = 0;
  std::string model;
  std::vector<int32_t> prompt;
  std::string prompt_text;  // for echo
  std::vector<Choice> choices;
  std::vector<std::vector<SampledToken>> logprobs;  // per choice
  const Tokenizer* tokenizer = nullptr;
  EngineService* engine = nullptr;
  RequestId request_id = -1;
  std::shared_ptr<http::ResponseStream> stream;  // streaming
  http::Respond respond;                         // non-streaming
  std::shared_ptr<ServerMetrics> metrics;
  std::shared_ptr<std::atomic<int>> in_flight;
  std::shared_ptr<TirSession> tir;  // server-side tool calls, when the request asked for them

  bool chat() const { return req.endpoint == Endpoint::ChatCompletions; }

  json chunk_base() const {
    return {{"id", id},
            {"object", chat() ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", model}};
  }

  void write(const json& chunk) {
    if (!stream->write(sse_event(chunk))) engine->abort(request_id);  // client gone or too slow
  }

  // Chunks sent before any token: the assistant role (chat) or the echoed prompt (completions).
  void write_preamble() {
    for (size_t i = 0; i < choices.size(); ++i) {
      json chunk = chunk_base();
      if (chat()) {
        chunk["choices"] = json::array({{{"index", i},
                                         {"delta", {{"role", "assistant"}, {"content", ""}}},
                                         {"logprobs", nullptr},
                                         {"finish_reason", nullptr}}});
      } else if (req.echo) {
        chunk["choices"] =
            json::array({{{"index", i}, {"text", prompt_text}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
      } else {
        continue;
      }
      write(chunk);
    }
  }

  void on_token(const TokenEvent& event) {
    Choice& c = choices[static_cast<size_t>(event.index)];
    auto& lps = logprobs[static_cast<size_t>(event.index)];
    const size_t first_new = lps.size();
    for (const SampledToken& t : event.tokens) {
      c.tokens.push_back(t.token);
      if (req.params.logprobs >= 0) lps.push_back(t);
    }
    c.text += event.text;
    if (event.held && tir) tir->on_hold(event.request_id, event.index, c.text);
    std::string piece = event.text;
    if (event.finished()) {
      c.finish = event.finish_reason;
      c.stop_reason = stop_reason_json(*tokenizer, req.params, c.tokens, c.text, c.finish);
      if (req.include_stop_str_in_output && c.stop_reason.is_string()) {
        c.text += c.stop_reason.get<std::string>();
        piece += c.stop_reason.get<std::string>();
      }
    }
    if (!stream) return;
    const bool has_logprobs = req.params.logprobs >= 0 && lps.size() > first_new;
    if (piece.empty() && !event.finished() && !has_logprobs) return;
    const std::span<const SampledToken> new_lps(lps.data() + first_new, lps.size() - first_new);
    LogprobFormatter fmt_lp(*tokenizer);
    json choice = {{"index", event.index}};
    if (chat()) {
      choice["delta"] = piece.empty() && event.finished() ? json::object() : json{{"content", piece}};
      choice["logprobs"] = has_logprobs ? fmt_lp.chat(new_lps, req.top_logprobs) : json(nullptr);
    } else {
      choice["text"] = piece;
      choice["logprobs"] = has_logprobs ? fmt_lp.completion(new_lps, c.text_offset) : json(nullptr);
    }
    choice["finish_reason"] = finish_reason_json(c.finish);
    if (event.finished()) choice["stop_reason"] = c.stop_reason;
    json chunk = chunk_base();
    chunk["choices"] = json::array({std::move(choice)});
    write(chunk);
  }

  int completion_tokens() const {
    int total = 0;
    for (const auto& c : choices) total += static_cast<int>(c.tokens.size());
    return total;
  }

  void on_finish(RequestResult&& result) {
    in_flight->fetch_sub(1);
    record(result);
    std::string tool_error;
    if (tir) {
      tir->on_finish();
      tool_error = tir->error();
    }
    const bool failed = !result.error.empty() && completion_tokens() == 0;
    json usage = usage_json(static_cast<int>(prompt.size()), completion_tokens(), result.num_cached_prompt_tokens);
    if (tir) {
      int inserted = 0;
      for (const auto& seq : result.sequences) inserted += seq.num_inserted_tokens;
      usage["qed"] = {
          {"code_executions", tir->executions()}, {"code_timeouts", tir->timeouts()}, {"tool_output_tokens", inserted}};
    }
    if (!tool_error.empty()) {
      const ApiError error(502, "server-side code execution failed: " + tool_error, "tools");
      if (!stream) return respond(http::Response::json(502, error.to_json()));
      write(error.to_json());
      stream->write(sse_done());
      stream->close();
      return;
    }
    if (stream) {
      if (failed) write(ApiError(400, result.error).to_json());
      if (req.include_usage) {
        json chunk = chunk_base();
        chunk["choices"] = json::array();
        chunk["usage"] = usage;
        write(chunk);
      }
      stream->write(sse_done());
      stream->close();
      return;
    }
    if (failed) {
      respond(http::Response::json(400, ApiError(400, result.error).to_json()));
      return;
    }
    json body = {{"id", id},
                 {"object", chat() ? "chat.completion" : "text_completion"},
                 {"created", created},
                 {"model", model},
                 {"choices", json::array()},
                 {"usage", usage}};
    LogprobFormatter fmt_lp(*tokenizer);
    for (size_t i = 0; i < choices.size(); ++i) {
      Choice& c = choices[i];
      json choice = {{"index", i}};
      const bool has_logprobs = req.params.logprobs >= 0;
      if (chat()) {
        choice["message"] = {{"role", "assistant"}, {"content", c.text}};
        choice["logprobs"] = has_logprobs ? fmt_lp.chat(logprobs[i], req.top_logprobs) : json(nullptr);
      } else {
        choice["text"] = req.echo ? prompt_text + c.text : c.text;
        choice["logprobs"] = has_logprobs ? fmt_lp.completion(logprobs[i], c.text_offset) : json(nullptr);
      }
      choice["finish_reason"] = finish_reason_json(c.finish);
      choice["stop_reason"] = c.stop_reason;
      if (req.return_token_ids) {
        choice["prompt_token_ids"] = prompt;
        choice["token_ids"] = result.sequences[i].token_ids;  // tool output tokens included, as in the text
      }
      body["choices"].push_back(std::move(choice));
    }
    http::Response response;
    response.body = dump_json(body);
    respond(std::move(response));
  }

  void record(const RequestResult& result) const {
    FinishedRequest f;
    FinishReason last = FinishReason::None;
    for (const auto& c : choices) last = c.finish;
    f.finish_reason = finish_reason_json(last).is_string() ? finish_reason_json(last).get<std::string>() : "abort";
    f.prompt_tokens = static_cast<int>(prompt.size());
    f.generation_tokens = completion_tokens();
    f.cached_tokens = result.num_cached_prompt_tokens;
    f.ttft_s = result.ttft_s;
    f.e2e_s = result.total_s;
    f.queue_s = result.queue_s;
    for (const auto& seq : result.sequences) {
      for (size_t i = 1; i < seq.token_times_s.size(); ++i) {
        f.inter_token_s.push_back(seq.token_times_s[i] - seq.token_times_s[i - 1]);
      }
    }
    metrics->record(f);
  }
};

OpenAiServer::OpenAiServer(ServeConfig config, const Tokenizer& tokenizer, const ChatTemplate* chat_template,
                           EngineService& engine, int max_model_len)
    : config_(std::move(config)),
      tokenizer_(tokenizer),
      chat_template_(chat_template),
      engine_(engine),
      max_model_len_(max_model_len),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()),
      metrics_(std::make_shared<ServerMetrics>()),
      in_flight_(std::make_shared<std::atomic<int>>(0)) {
  config_.limits.max_model_len = max_model_len;
}

http::Response OpenAiServer::error_response(const ApiError& error) const {
  metrics_->record_rejected(error.status());
  return http::Response::json(error.status(), error.to_json());
}

void OpenAiServer::check_api_key(const http::Request& request) const {
  if (config_.api_key.empty()) return;
  const auto header = request.header("Authorization");
  if (!header || *header != "Bearer " + config_.api_key) {
    throw ApiError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')");
  }
}

std::vector<int32_t> OpenAiServer::prompt_tokens(const GenerationRequest& req, std::string& prompt_text) const {
  if (req.endpoint == Endpoint::ChatCompletions) {
    if (!chat_template_) throw ApiError(400, "this model has no chat template; use /v1/completions", "messages");
    ChatTemplate::Options options;
    options.add_generation_prompt = req.add_generation_prompt;
    options.enable_thinking = req.enable_thinking;
    try {
      prompt_text = chat_template_->render(req.messages, options);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "messages");
    }
    return tokenizer_.encode(prompt_text, /*add_special_tokens=*/false);  // the template has any BOS already
  }
  if (const auto* ids = std::get_if<std::vector<int32_t>>(&req.prompt)) {
    for (int32_t id : *ids) {
      if (static_cast<size_t>(id) >= tokenizer_.vocab_size()) {
        throw ApiError(400, fmt::format("prompt token id {} is outside the vocabulary", id), "prompt");
      }
    }
    prompt_text = tokenizer_.decode(*ids, false);
    return *ids;
  }
  prompt_text = std::get<std::string>(req.prompt);
  return tokenizer_.encode(prompt_text, /*add_special_tokens=*/true);  // as vLLM does for completions
}

void OpenAiServer::generate(const http::Request& request, http::Respond respond, Endpoint endpoint) {
  auto g = std::make_shared<Generation>();
  try {
    check_api_key(request);
    const json body = parse_json_body(request.body);
    g->req = endpoint == Endpoint::Completions ? parse_completion_request(body, config_.limits)
                                               : parse_chat_request(body, config_.limits);
    GenerationRequest& req = g->req;
    if (!req.model.empty() && req.model != config_.served_model_name) {
      throw ApiError(404, fmt::format("The model `{}` does not exist.", req.model), "model");
    }
    if (req.tools.enabled && !config_.tir.sandbox) {
      throw ApiError(400, "server-side code execution needs a sandbox: start the server with --sandbox URL", "tools");
    }
    if (req.early_stop.time_budget_s || req.early_stop.stop_after_first || req.early_stop.consensus) {
      throw ApiError(400, "early-stop controls are not available yet", "qed");
    }
    if (req.echo && req.params.logprobs >= 0) {
      throw ApiError(400, "echo together with logprobs (prompt logprobs) is not supported", "echo");
    }
    g->prompt = prompt_tokens(req, g->prompt_text);
    const int prompt_len = static_cast<int>(g->prompt.size());
    if (prompt_len == 0) throw ApiError(400, "the prompt encodes to no tokens", "prompt");
    if (prompt_len >= max_model_len_) {
      throw ApiError(400,
                     fmt::format("This model's maximum context length is {} tokens. However, your request has {} "
                                 "input tokens. Please reduce the length of the input.",
                                 max_model_len_, prompt_len),
                     endpoint == Endpoint::Completions ? "prompt" : "messages");
    }
    const int room = max_model_len_ - prompt_len;
    if (explicit_field(body, "max_tokens") || explicit_field(body, "max_completion_tokens")) {
      if (req.params.max_tokens > room) {
        throw ApiError(
            400,
            fmt::format("This model's maximum context length is {} tokens. However, you requested {} "
                        "tokens ({} in the input, {} for the completion). Please reduce the length of "
                        "the input or the completion.",
                        max_model_len_, prompt_len + req.params.max_tokens, prompt_len, req.params.max_tokens),
            "max_tokens");
      }
    } else {
      req.params.max_tokens = endpoint == Endpoint::Completions ? std::min(req.params.max_tokens, room) : room;
    }
    if (in_flight_->fetch_add(1) >= config_.max_queue) {
      in_flight_->fetch_sub(1);
      throw ApiError(
          503, fmt::format("the server is at its limit of {} requests in flight; retry later", config_.max_queue));
    }
  } catch (const ApiError& e) {
    return respond(error_response(e));
  } catch (const Error& e) {
    return respond(error_response(ApiError(400, e.what())));
  }

  g->id = random_id(endpoint == Endpoint::Completions ? "cmpl" : "chatcmpl");
  g->created =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  g->model = config_.served_model_name;
  g->choices.resize(static_cast<size_t>(g->req.params.n));
  g->logprobs.resize(g->choices.size());
  if (g->req.echo) {
    for (auto& c : g->choices) c.text_offset = g->prompt_text.size();
  }
  g->tokenizer = &tokenizer_;
  g->engine = &engine_;
  g->metrics = metrics_;
  g->in_flight = in_flight_;
  if (g->req.stream) {
    g->stream = std::make_shared<http::ResponseStream>();
  } else {
    g->respond = respond;
  }

  RequestCallbacks callbacks;
  callbacks.on_token = [g](const TokenEvent& event) { g->on_token(event); };
  callbacks.on_finish = [g](RequestResult&& result) { g->on_finish(std::move(result)); };
  SamplingParams params = g->req.params;
  if (g->req.tools.enabled) {
    const ToolIntegration& t = g->req.tools;
    tir::ToolLimits limits{t.max_code_executions, t.code_timeout_s, t.max_code_output_chars, t.total_code_time_s,
                           t.add_remaining_code_executions};
    g->tir = std::make_shared<TirSession>(config_.tir, limits, params.n, tokenizer_, engine_);
    TirSession::configure(params);
  }
  if (g->stream) g->write_preamble();
  try {
    g->request_id = engine_.submit(g->prompt, params, std::move(callbacks));
  } catch (const Error& e) {
    in_flight_->fetch_sub(1);
    return respond(error_response(ApiError(400, e.what())));
  }
  if (request.client) {
    request.client->on_disconnect([engine = &engine_, id = g->request_id] { engine->abort(id); });
  }
  if (g->stream) {
    http::Response response;
    response.content_type = "text/event-stream";
    response.headers.emplace_back("Cache-Control", "no-cache");
    response.stream = g->stream;
    respond(std::move(response));
  }
}

http::Response OpenAiServer::models() const {
  json card = {{"id", config_.served_model_name},
               {"object", "model"},
               {"created", created_},
               {"owned_by", "qed"},
               {"root", config_.model_dir},
               {"parent", nullptr},
               {"max_model_len", max_model_len_},
               {"permission", json::array()}};
  return http::Response::json(200, {{"object", "list"}, {"data", json::array({card})}});
}

http::Response OpenAiServer::tokenize(const http::Request& request) const {
  const json body = parse_json_body(request.body);
  if (explicit_field(body, "model") &&
      (!body["model"].is_string() || body["model"].get<std::string>() != config_.served_model_name)) {
    throw ApiError(404, fmt::format("The model `{}` does not exist.", dump_json(body["model"])), "model");
  }
  std::vector<int32_t> tokens;
  if (explicit_field(body, "messages")) {
    GenerationRequest req = parse_chat_request(body, config_.limits);
    std::string text;
    tokens = prompt_tokens(req, text);
  } else {
    const auto it = body.find("prompt");
    if (it == body.end() || !it->is_string())
      throw ApiError(400, "'prompt' (a string) or 'messages' is required", "prompt");
    bool add_special = true;
    if (auto a = body.find("add_special_tokens"); a != body.end() && !a->is_null()) {
      if (!a->is_boolean()) throw ApiError(400, "'add_special_tokens' must be a boolean", "add_special_tokens");
      add_special = a->get<bool>();
    }
    tokens = tokenizer_.encode(it->get<std::string>(), add_special);
  }
  return http::Response::json(
      200, {{"count", tokens.size()}, {"max_model_len", max_model_len_}, {"tokens", tokens}, {"token_strs", nullptr}});
}

http::Response OpenAiServer::metrics() const {
  return http::Response::text(200, metrics_->render(config_.served_model_name, engine_.snapshot(), in_flight_->load()),
                              "text/plain; version=0.0.4; charset=utf-8");
}

http::Router OpenAiServer::router() {
  http::Router router;
  // Sync handlers that answer in OpenAI's error shape whatever goes wrong.
  auto api = [this](bool needs_key, std::function<http::Response(const http::Request&)> handler) {
    return [this, needs_key, handler = std::move(handler)](const http::Request& request) {
      try {
        if (needs_key) check_api_key(request);
        return handler(request);
      } catch (const ApiError& e) {
        return error_response(e);
      } catch (const Error& e) {
        return error_response(ApiError(400, e.what()));
      }
    };
  };
  router.add("POST", "/v1/completions",
             [this](const http::Request& r, http::Respond respond) { generate(r, respond, Endpoint::Completions); });
  router.add("POST", "/v1/chat/completions", [this](const http::Request& r, http::Respond respond) {
    generate(r, respond, Endpoint::ChatCompletions);
  });
  router.add_sync("GET", "/v1/models", api(true, [this](const http::Request&) { return models(); }));
  router.add_sync("POST", "/tokenize", api(true, [this](const http::Request& r) { return tokenize(r); }));
  router.add_sync("GET", "/health", [](const http::Request&) { return http::Response::text(200, ""); });
  router.add_sync("GET", "/metrics", [this](const http::Request&) { return metrics(); });
  router.add_sync("GET", "/openapi.json", [this](const http::Request&) {
    return http::Response::json(200, openapi_spec(config_.served_model_name));
  });
  router.set_fallback([this](const http::Request& r, http::Respond respond) {
    respond(error_response(ApiError(404, fmt::format("no route for {} {}", r.method, r.path))));
  });
  return router;
}

}  // namespace qed::server
