#include "tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "tokenizer/chat_recognize.h"
#include "tokenizer/chat_render.h"

namespace qed {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: read error", path.string());
  return text.str();
}

// bos_token is either a string or, in older configs, an AddedToken object {"content": …}.
std::optional<std::string> token_text(const nlohmann::json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

const char* to_string(ChatTemplateFamily family) {
  switch (family) {
    case ChatTemplateFamily::Qwen25ChatML:
      return "qwen2.5-chatml";
    case ChatTemplateFamily::Qwen3:
      return "qwen3";
    case ChatTemplateFamily::Llama3:
      return "llama3";
    case ChatTemplateFamily::PlainChatML:
      return "chatml";
  }
  return "unknown";
}

ChatTemplate ChatTemplate::from_template_text(const std::string& jinja_text,
                                              const std::optional<std::string>& bos_token, const std::string& source) {
  const chat_recognize::Recognized recognized = chat_recognize::recognize(jinja_text, source);
  if (recognized.uses_bos_token && !bos_token) fail("{}: the chat template uses bos_token but none is set", source);
  ChatTemplate result;
  result.family_ = recognized.family;
  result.bos_token_ = bos_token.value_or("");
  result.default_system_ = recognized.default_system;
  result.tools_default_system_ = recognized.tools_default_system;
  result.generation_prompt_always_ = recognized.generation_prompt_always;
  return result;
}

ChatTemplate ChatTemplate::from_config_text(const std::string& tokenizer_config_json, const std::string& source) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(tokenizer_config_json);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON: {}", source, e.what());
  }
  if (!config.is_object()) fail("{}: expected a JSON object", source);
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) fail("{}: no chat_template", source);
  std::string jinja;
  if (it->is_string()) {
    jinja = it->get<std::string>();
  } else if (it->is_array()) {
    // Several named templates ([{"name": "default", "template": …}, {"name": "tool_use", …}]): apply_chat_template
    // uses "default" when no tools are passed.
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        jinja = entry["template"].get<std::string>();
      }
    }
    if (jinja.empty()) fail("{}: chat_template list has no \"default\" template", source);
  } else {
    fail("{}: chat_template must be a string or a list of named templates", source);
  }
  return from_template_text(jinja, token_text(config, "bos_token"), source);
}

ChatTemplate ChatTemplate::from_dir(const std::string& dir) {
  const std::filesystem::path config_path = std::filesystem::path(dir) / "tokenizer_config.json";
  const std::filesystem::path jinja_path = std::filesystem::path(dir) / "chat_template.jinja";
  const std::string config_text = read_file(config_path);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON: {}", config_path.string(), e.what());
  }
  // transformers >= 4.47 writes the template to chat_template.jinja instead of tokenizer_config.json.
  if (config.is_object() && !config.contains("chat_template") && std::filesystem::exists(jinja_path)) {
    return from_template_text(read_file(jinja_path), token_text(config, "bos_token"), jinja_path.string());
  }
  return from_config_text(config_text, config_path.string());
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, const Options& options) const {
  if (messages.empty()) fail("chat template: cannot render an empty conversation (at least one message needed)");
  switch (family_) {
    case ChatTemplateFamily::Qwen25ChatML:
      return chat_render::qwen25(messages, options, default_system_, tools_default_system_);
    case ChatTemplateFamily::Qwen3:
      return chat_render::qwen3(messages, options);
    case ChatTemplateFamily::Llama3:
      return chat_render::llama3(messages, options, bos_token_, generation_prompt_always_);
    case ChatTemplateFamily::PlainChatML:
      return chat_render::plain_chatml(messages, options, default_system_);
  }
  fail("chat template: unknown family");
}

}  // namespace qed
