#pragma once
// One renderer per recognised template family; each mirrors its Jinja source statement by statement.
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"

namespace qed::chat_render {

// Qwen2.5-Instruct ChatML: default system message when the first message is not a system one, tools listed in the
// system turn, tool calls as <tool_call> JSON, role "tool" wrapped in <tool_response> inside a user turn, unknown
// roles dropped.
std::string qwen25(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                   const std::optional<std::string>& default_system,
                   const std::optional<std::string>& tools_default_system);

// Qwen3 (hybrid thinking): reasoning kept only for assistant turns after the last real user query; tools and tool
// calls as in Qwen2.5 with small differences in spacing and argument quoting.
std::string qwen3(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options);

// Llama-3-Instruct: bos first, every content trimmed, header ids around the role.
std::string llama3(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                   const std::string& bos_token, bool generation_prompt_always);

// The generic ChatML loop (every role rendered alike), optionally with Qwen2's default system message.
std::string plain_chatml(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                         const std::optional<std::string>& default_system);

}  // namespace qed::chat_render
