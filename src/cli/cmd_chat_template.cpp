// qed chat-template: renders conversations with a tokenizer directory's chat template, natively.
// stdin: one JSON object per line {"messages": [...], "add_generation_prompt": bool, "enable_thinking"?: bool,
// "tools"?: [...]}, messages {"role", "content", "reasoning_content"?, "tool_calls"?: [...]};
// stdout: one JSON string per line, the rendered prompt (what transformers' apply_chat_template(tokenize=False)
// returns). All lines go through one process so parity tests and batch jobs pay the start-up once.
#include <fmt/format.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace qed::cli {
namespace {

using Json = nlohmann::ordered_json;  // ordered: tool JSON is written back in the order it was given

// {"name": …, "arguments": …} or OpenAI's {"type": "function", "function": {"name": …, "arguments": …}}.
ChatToolCall parse_tool_call(const Json& j, const std::string& where) {
  const Json& call = j.is_object() && j.contains("function") && j["function"].is_object() ? j["function"] : j;
  if (!call.is_object() || !call.contains("name") || !call["name"].is_string()) {
    fail("{}: a tool call needs a string \"name\"", where);
  }
  if (!call.contains("arguments"))
    fail("{}: tool call '{}' has no \"arguments\"", where, call["name"].get<std::string>());
  return ChatToolCall{call["name"].get<std::string>(), call["arguments"].dump()};
}

ChatMessage parse_message(const Json& j, size_t line_no, size_t index) {
  const std::string where = fmt::format("stdin line {}: messages[{}]", line_no, index);
  if (!j.is_object()) fail("{}: expected an object", where);
  if (!j.contains("role") || !j["role"].is_string()) fail("{}: \"role\" must be a string", where);
  if (!j.contains("content") || !j["content"].is_string()) fail("{}: \"content\" must be a string", where);
  ChatMessage message{j["role"].get<std::string>(), j["content"].get<std::string>()};
  for (const auto& [key, value] : j.items()) {
    if (key == "role" || key == "content") continue;
    if (key == "reasoning_content" || key == "thinking" || key == "reasoning") {
      // transformers 5 reads the first non-null of reasoning_content, thinking, reasoning as reasoning_content.
      if (!value.is_string() && !value.is_null()) fail("{}: \"{}\" must be a string or null", where, key);
    } else if (key == "tool_calls") {
      if (!value.is_array() && !value.is_null()) fail("{}: \"tool_calls\" must be a list", where);
      if (value.is_array()) {
        for (const auto& call : value) message.tool_calls.push_back(parse_tool_call(call, where));
      }
    } else {
      fail("{}: unknown field \"{}\"", where, key);
    }
  }
  for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
    if (j.contains(key) && j[key].is_string()) {
      message.reasoning_content = j[key].get<std::string>();
      break;
    }
  }
  return message;
}

std::string render_line(const ChatTemplate& chat_template, const std::string& line, size_t line_no) {
  Json request;
  try {
    request = Json::parse(line);
  } catch (const Json::parse_error& e) {
    fail("stdin line {}: invalid JSON: {}", line_no, e.what());
  }
  if (!request.is_object()) fail("stdin line {}: expected a JSON object", line_no);
  ChatTemplate::Options options;
  options.add_generation_prompt = false;  // apply_chat_template's default
  std::vector<ChatMessage> messages;
  for (const auto& [key, value] : request.items()) {
    if (key == "messages" && value.is_array()) {
      for (size_t i = 0; i < value.size(); ++i) messages.push_back(parse_message(value[i], line_no, i));
    } else if (key == "add_generation_prompt" && value.is_boolean()) {
      options.add_generation_prompt = value.get<bool>();
    } else if (key == "enable_thinking" && value.is_boolean()) {
      options.enable_thinking = value.get<bool>();
    } else if (key == "tools" && (value.is_array() || value.is_null())) {
      if (value.is_array()) {
        for (const auto& tool : value) options.tools_json.push_back(tool.dump());
      }
    } else {
      fail("stdin line {}: unexpected field \"{}\" (or wrong type)", line_no, key);
    }
  }
  if (!request.contains("messages")) fail("stdin line {}: missing \"messages\"", line_no);
  try {
    return chat_template.render(messages, options);
  } catch (const Error& e) {
    fail("stdin line {}: {}", line_no, e.what());
  }
}

}  // namespace

void register_chat_template(CLI::App& app) {
  auto* cmd = app.add_subcommand("chat-template",
                                 "Render chat conversations (JSON lines on stdin) with a tokenizer's chat template");
  auto tokenizer_dir = std::make_shared<std::string>();
  auto print_family = std::make_shared<bool>(false);
  cmd->add_option("--tokenizer", *tokenizer_dir, "Directory with tokenizer_config.json")->required();
  cmd->add_flag("--print-family", *print_family, "Print the recognised template family and exit");
  cmd->callback([tokenizer_dir, print_family] {
    const ChatTemplate chat_template = ChatTemplate::from_dir(*tokenizer_dir);
    if (*print_family) {
      fmt::print("{}\n", to_string(chat_template.family()));
      return;
    }
    std::string line;
    size_t line_no = 0;
    std::string out;
    while (std::getline(std::cin, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      out = Json(render_line(chat_template, line, line_no)).dump(-1, ' ', false, Json::error_handler_t::replace);
      out += '\n';
      std::cout << out;
    }
    std::cout.flush();
  });
}

}  // namespace qed::cli
