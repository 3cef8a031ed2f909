#include "tokenizer/chat_render.h"

#include <fmt/format.h>

#include <string_view>

#include "tokenizer/chat_json.h"
#include "tokenizer/chat_text.h"

namespace qed::chat_render {
namespace {

using chat_text::lstrip_char;

void append_turn(std::string& out, std::string_view role, std::string_view content) {
  out.append("<|im_start|>").append(role).append("\n").append(content).append("<|im_end|>\n");
}

bool is_role(const std::vector<ChatMessage>& messages, size_t index, std::string_view role) {
  return index < messages.size() && messages[index].role == role;
}

// Both Qwen templates put consecutive tool results into one user turn:
// `<|im_start|>user` once, then `\n<tool_response>\n…\n</tool_response>` per result, `<|im_end|>\n` after the last.
void append_tool_response(std::string& out, const std::vector<ChatMessage>& messages, size_t i) {
  if (i == 0 || !is_role(messages, i - 1, "tool")) out.append("<|im_start|>user");
  out.append("\n<tool_response>\n").append(messages[i].content).append("\n</tool_response>");
  if (i + 1 == messages.size() || !is_role(messages, i + 1, "tool")) out.append("<|im_end|>\n");
}

// The tool list both Qwen templates put in the system turn: one JSON object per line inside <tools></tools>.
void append_tools(std::string& out, const std::vector<std::string>& tools_json) {
  out.append(
      "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with "
      "function signatures within <tools></tools> XML tags:\n<tools>");
  for (size_t i = 0; i < tools_json.size(); ++i) {
    out.append("\n").append(chat_json::python_dumps(chat_json::parse(tools_json[i], fmt::format("tools[{}]", i))));
  }
  out.append(
      "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
      "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
      "<args-json-object>}\n</tool_call><|im_end|>\n");
}

// `{"name": "<name>", "arguments": <arguments>}` inside <tool_call> tags. Qwen2.5 passes the arguments through
// `tojson` whatever they are; Qwen3 writes a string's text unquoted (`arguments is string`).
void append_tool_call(std::string& out, const ChatToolCall& call, bool string_arguments_verbatim) {
  const nlohmann::ordered_json arguments =
      chat_json::parse(call.arguments_json, fmt::format("tool call '{}': arguments", call.name));
  out.append("<tool_call>\n{\"name\": \"").append(call.name).append("\", \"arguments\": ");
  if (string_arguments_verbatim && arguments.is_string()) {
    out.append(arguments.get<std::string>());
  } else {
    out.append(chat_json::python_dumps(arguments));
  }
  out.append("}\n</tool_call>");
}

}  // namespace

std::string qwen25(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                   const std::optional<std::string>& default_system,
                   const std::optional<std::string>& tools_default_system) {
  std::string out;
  const bool has_system = messages.front().role == "system";
  if (!options.tools_json.empty()) {
    out.append("<|im_start|>system\n");
    if (has_system) {
      out.append(messages.front().content);
    } else if (tools_default_system) {
      out.append(*tools_default_system);
    }
    out.append("\n\n");
    append_tools(out, options.tools_json);
  } else if (has_system) {
    append_turn(out, "system", messages.front().content);
  } else if (default_system) {
    append_turn(out, "system", *default_system);
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    // `(role == "user") or (role == "system" and not loop.first) or (role == "assistant" and not tool_calls)`
    if (m.role == "user" || (m.role == "system" && i != 0) || (m.role == "assistant" && m.tool_calls.empty())) {
      append_turn(out, m.role, m.content);
    } else if (m.role == "assistant") {
      out.append("<|im_start|>assistant");
      if (!m.content.empty()) out.append("\n").append(m.content);
      for (const ChatToolCall& call : m.tool_calls) {
        out.append("\n");
        append_tool_call(out, call, /*string_arguments_verbatim=*/false);
      }
      out.append("<|im_end|>\n");
    } else if (m.role == "tool") {
      append_tool_response(out, messages, i);
    }
  }
  if (options.add_generation_prompt) out.append("<|im_start|>assistant\n");
  return out;
}

std::string qwen3(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options) {
  std::string out;
  if (!options.tools_json.empty()) {
    out.append("<|im_start|>system\n");
    if (messages.front().role == "system") out.append(messages.front().content).append("\n\n");
    append_tools(out, options.tools_json);
  } else if (messages.front().role == "system") {
    append_turn(out, "system", messages.front().content);
  }

  // The last user message that is a real query, not a tool result passed back as a user turn; reasoning is kept
  // only for assistant turns after it (the current multi-step tool-calling exchange).
  size_t last_query_index = messages.size() - 1;
  for (size_t k = messages.size(); k-- > 0;) {
    const std::string_view content = messages[k].content;
    const bool is_tool_result = content.starts_with("<tool_response>") && content.ends_with("</tool_response>");
    if (messages[k].role == "user" && !is_tool_result) {
      last_query_index = k;
      break;
    }
  }

  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      append_turn(out, m.role, m.content);
    } else if (m.role == "assistant") {
      std::string_view content = m.content;
      std::string_view reasoning;
      if (m.reasoning_content) {
        reasoning = *m.reasoning_content;
      } else if (content.find("</think>") != std::string_view::npos) {
        // content.split('</think>')[-1].lstrip('\n') and
        // content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
        const std::string_view before = chat_text::before_first(m.content, "</think>");
        reasoning = lstrip_char(chat_text::after_last(chat_text::rstrip_char(before, '\n'), "<think>"), '\n');
        content = lstrip_char(chat_text::after_last(m.content, "</think>"), '\n');
      }
      const bool is_last = i + 1 == messages.size();
      out.append("<|im_start|>").append(m.role).append("\n");
      if (i > last_query_index && (is_last || !reasoning.empty())) {
        out.append("<think>\n").append(chat_text::strip_char(reasoning, '\n')).append("\n</think>\n\n");
        out.append(lstrip_char(content, '\n'));
      } else {
        out.append(content);
      }
      for (size_t k = 0; k < m.tool_calls.size(); ++k) {
        if (k > 0 || !content.empty()) out.append("\n");
        append_tool_call(out, m.tool_calls[k], /*string_arguments_verbatim=*/true);
      }
      out.append("<|im_end|>\n");
    } else if (m.role == "tool") {
      append_tool_response(out, messages, i);
    }
  }
  if (options.add_generation_prompt) {
    out.append("<|im_start|>assistant\n");
    // `enable_thinking is defined and enable_thinking is false`: an empty think block switches reasoning off.
    if (options.enable_thinking.has_value() && !*options.enable_thinking) out.append("<think>\n\n</think>\n\n");
  }
  return out;
}

std::string llama3(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                   const std::string& bos_token, bool generation_prompt_always) {
  std::string out = bos_token;
  for (const ChatMessage& m : messages) {
    // Jinja's `trim` is Python's str.strip(): Unicode whitespace, not just ASCII.
    out.append("<|start_header_id|>").append(m.role).append("<|end_header_id|>\n\n");
    out.append(chat_text::strip_whitespace(m.content)).append("<|eot_id|>");
  }
  if (options.add_generation_prompt || generation_prompt_always) {
    out.append("<|start_header_id|>assistant<|end_header_id|>\n\n");
  }
  return out;
}

std::string plain_chatml(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                         const std::optional<std::string>& default_system) {
  std::string out;
  if (default_system && messages.front().role != "system") append_turn(out, "system", *default_system);
  for (const ChatMessage& m : messages) append_turn(out, m.role, m.content);
  if (options.add_generation_prompt) out.append("<|im_start|>assistant\n");
  return out;
}

}  // namespace qed::chat_render
