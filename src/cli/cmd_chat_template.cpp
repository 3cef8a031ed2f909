// qed chat-template: renders conversations with a tokenizer directory's chat template, natively.
// stdin: one JSON object per line {"messages": [...], "add_generation_prompt": bool, "enable_thinking"?: bool};
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

ChatMessage parse_message(const nlohmann::json& j, size_t line_no, size_t index) {
  const auto where = [&] { return fmt::format("stdin line {}: messages[{}]", line_no, index); };
  if (!j.is_object()) fail("{}: expected an object", where());
  ChatMessage message;
  for (const auto& [key, value] : j.items()) {
    if (key == "role" && value.is_string()) {
      message.role = value.get<std::string>();
    } else if (key == "content" && value.is_string()) {
      message.content = value.get<std::string>();
    } else if (key == "reasoning_content" && (value.is_string() || value.is_null())) {
      // null is the template's `is none`: the same as leaving the field out.
      if (value.is_string()) message.reasoning_content = value.get<std::string>();
    } else if (key == "tool_calls" || key == "role" || key == "content" || key == "reasoning_content") {
      fail("{}: \"{}\" {}", where(), key,
           key == "tool_calls" ? "is not supported (put <tool_call> text in content)" : "must be a string");
    } else {
      fail("{}: unknown field \"{}\"", where(), key);
    }
  }
  if (!j.contains("role")) fail("{}: missing \"role\"", where());
  if (!j.contains("content")) fail("{}: missing \"content\"", where());
  return message;
}

std::string render_line(const ChatTemplate& chat_template, const std::string& line, size_t line_no) {
  nlohmann::json request;
  try {
    request = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
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
    } else if (key == "tools" && (value.is_null() || (value.is_array() && value.empty()))) {
      // No tools: the templates' `{% if tools %}` is false for these.
    } else if (key == "tools") {
      fail("stdin line {}: \"tools\" is not supported", line_no);
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
      out = nlohmann::json(render_line(chat_template, line, line_no))
                .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      out += '\n';
      std::cout << out;
    }
    std::cout.flush();
  });
}

}  // namespace qed::cli
