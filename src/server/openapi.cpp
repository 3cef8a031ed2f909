#include "server/openapi.h"

namespace qed::server {

using nlohmann::json;

namespace {

json error_schema() {
  return {{"type", "object"},
          {"required", {"error"}},
          {"properties",
           {{"error",
             {{"type", "object"},
              {"required", {"message", "type", "code"}},
              {"properties",
               {{"message", {{"type", "string"}}},
                {"type", {{"type", "string"}}},
                {"param", {{"type", {"string", "null"}}}},
                {"code", {{"type", "integer"}}}}}}}}}};
}

json json_content(const json& schema) {
  return {{"application/json", {{"schema", schema}}}};
}

json errors(std::initializer_list<const char*> statuses) {
  json out = json::object();
  for (const char* s : statuses) out[s] = {{"description", "OpenAI error"}, {"content", json_content(error_schema())}};
  return out;
}

json sampling_properties() {
  const json nullable_number = {{"type", {"number", "null"}}};
  const json nullable_int = {{"type", {"integer", "null"}}};
  const json nullable_bool = {{"type", {"boolean", "null"}}};
  return {
      {"model", {{"type", {"string", "null"}}}},
      {"max_tokens", {{"type", {"integer", "null"}}, {"minimum", 1}}},
      {"max_completion_tokens", {{"type", {"integer", "null"}}, {"minimum", 1}}},
      {"temperature", {{"type", {"number", "null"}}, {"minimum", 0}, {"maximum", 100}}},
      {"top_p", {{"type", {"number", "null"}}, {"exclusiveMinimum", 0}, {"maximum", 1}}},
      {"top_k", {{"type", {"integer", "null"}}, {"minimum", -1}}},
      {"min_p", {{"type", {"number", "null"}}, {"minimum", 0}, {"maximum", 1}}},
      {"repetition_penalty", {{"type", {"number", "null"}}, {"exclusiveMinimum", 0}, {"maximum", 100}}},
      {"frequency_penalty", {{"type", {"number", "null"}}, {"description", "only 0 is supported"}}},
      {"presence_penalty", {{"type", {"number", "null"}}, {"description", "only 0 is supported"}}},
      {"seed", nullable_int},
      {"n", {{"type", {"integer", "null"}}, {"minimum", 1}, {"maximum", 128}}},
      {"stop",
       {{"oneOf", {{{"type", "string"}}, {{"type", "array"}, {"items", {{"type", "string"}}}}, {{"type", "null"}}}}}},
      {"stop_token_ids", {{"type", {"array", "null"}}, {"items", {{"type", "integer"}}}}},
      {"ignore_eos", nullable_bool},
      {"skip_special_tokens", nullable_bool},
      {"spaces_between_special_tokens", nullable_bool},
      {"include_stop_str_in_output", nullable_bool},
      {"return_token_ids", nullable_bool},
      {"tools",
       {{"type", {"array", "null"}},
        {"description", "[{\"type\": \"code_interpreter\"}] runs <tool_call> code server-side (--sandbox)"}}},
      {"stream", nullable_bool},
      {"stream_options", {{"type", {"object", "null"}}, {"properties", {{"include_usage", nullable_bool}}}}},
      {"logit_bias", {{"type", {"object", "null"}}, {"description", "only empty is supported"}}},
  };
}

json completion_response() {
  return {{"type", "object"},
          {"required", {"id", "object", "created", "model", "choices"}},
          {"properties",
           {{"id", {{"type", "string"}}},
            {"object", {{"type", "string"}}},
            {"created", {{"type", "integer"}}},
            {"model", {{"type", "string"}}},
            {"choices", {{"type", "array"}}},
            {"usage",
             {{"type", "object"},
              {"properties",
               {{"prompt_tokens", {{"type", "integer"}}},
                {"completion_tokens", {{"type", "integer"}}},
                {"total_tokens", {{"type", "integer"}}},
                {"prompt_tokens_details", {{"type", "object"}}}}}}}}}};
}

}  // namespace

json openapi_spec(const std::string& model_name) {
  json completion_props = sampling_properties();
  completion_props["prompt"] = {
      {"oneOf",
       {{{"type", "string"}, {"minLength", 1}},
        {{"type", "array"}, {"items", {{"type", "integer"}, {"minimum", 0}}}, {"minItems", 1}},
        {{"type", "array"}, {"items", {{"type", "string"}}}, {"minItems", 1}, {"maxItems", 1}}}}};
  completion_props["echo"] = {{"type", {"boolean", "null"}}};
  completion_props["logprobs"] = {{"type", {"integer", "null"}}, {"minimum", 0}, {"maximum", 20}};

  json chat_props = sampling_properties();
  chat_props["messages"] = {
      {"type", "array"},
      {"minItems", 1},
      {"items",
       {{"type", "object"},
        {"required", {"role"}},
        {"properties", {{"role", {{"type", "string"}}}, {"content", {{"type", {"string", "array", "null"}}}}}}}}};
  chat_props["logprobs"] = {{"type", {"boolean", "null"}}};
  chat_props["top_logprobs"] = {{"type", {"integer", "null"}}, {"minimum", 0}, {"maximum", 20}};
  chat_props["add_generation_prompt"] = {{"type", {"boolean", "null"}}};
  chat_props["chat_template_kwargs"] = {{"type", {"object", "null"}}};

  const json generation_responses = [] {
    json r = errors({"400", "401", "404", "503"});
    r["200"] = {{"description", "The completion, or an SSE stream of chunks ending in `data: [DONE]` when stream"},
                {"content",
                 {{"application/json", {{"schema", completion_response()}}},
                  {"text/event-stream", {{"schema", {{"type", "string"}}}}}}}};
    return r;
  }();

  json paths = {
      {"/v1/completions",
       {{"post",
         {{"summary", "Text completion (vLLM fields)"},
          {"operationId", "create_completion"},
          {"requestBody",
           {{"required", true},
            {"content",
             json_content({{"type", "object"}, {"required", {"prompt"}}, {"properties", completion_props}})}}},
          {"responses", generation_responses}}}}},
      {"/v1/chat/completions",
       {{"post",
         {{"summary", "Chat completion: messages rendered with the model's chat template"},
          {"operationId", "create_chat_completion"},
          {"requestBody",
           {{"required", true},
            {"content", json_content({{"type", "object"}, {"required", {"messages"}}, {"properties", chat_props}})}}},
          {"responses", generation_responses}}}}},
      {"/v1/models",
       {{"get",
         {{"summary", "The served model (vLLM ModelList)"},
          {"operationId", "list_models"},
          {"responses",
           [] {
             json r = errors({"401"});
             r["200"] = {
                 {"description", "Model list"},
                 {"content",
                  json_content({{"type", "object"},
                                {"required", {"object", "data"}},
                                {"properties", {{"object", {{"type", "string"}}}, {"data", {{"type", "array"}}}}}})}};
             return r;
           }()}}}}},
      {"/tokenize",
       {{"post",
         {{"summary", "Token ids of a prompt or of a chat conversation (vLLM shape)"},
          {"operationId", "tokenize"},
          {"requestBody",
           {{"required", true},
            {"content", json_content({{"type", "object"},
                                      {"properties",
                                       {{"model", {{"type", {"string", "null"}}}},
                                        {"prompt", {{"type", "string"}}},
                                        {"add_special_tokens", {{"type", {"boolean", "null"}}}},
                                        {"messages", chat_props["messages"]}}}})}}},
          {"responses",
           [] {
             json r = errors({"400", "401", "404"});
             r["200"] = {
                 {"description", "Tokens"},
                 {"content", json_content({{"type", "object"},
                                           {"required", {"count", "max_model_len", "tokens"}},
                                           {"properties",
                                            {{"count", {{"type", "integer"}}},
                                             {"max_model_len", {{"type", "integer"}}},
                                             {"tokens", {{"type", "array"}, {"items", {{"type", "integer"}}}}}}}})}};
             return r;
           }()}}}}},
      {"/health",
       {{"get",
         {{"summary", "200 while serving"},
          {"operationId", "health"},
          {"responses", {{"200", {{"description", "OK"}}}}}}}}},
      {"/metrics",
       {{"get",
         {{"summary", "Prometheus metrics"},
          {"operationId", "metrics"},
          {"responses",
           {{"200",
             {{"description", "Prometheus text format"},
              {"content", {{"text/plain", {{"schema", {{"type", "string"}}}}}}}}}}}}}}},
      {"/openapi.json",
       {{"get",
         {{"summary", "This document"},
          {"operationId", "openapi"},
          {"responses",
           {{"200", {{"description", "OpenAPI 3.1"}, {"content", json_content({{"type", "object"}})}}}}}}}}},
  };
  return {{"openapi", "3.1.0"},
          {"info",
           {{"title", "qed serve"},
            {"version", "1"},
            {"description", "OpenAI-compatible API serving " + model_name + " (see docs/serve.md)"}}},
          {"paths", std::move(paths)}};
}

}  // namespace qed::server
