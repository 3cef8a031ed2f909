#pragma once
// One renderer per recognised template family; each mirrors its Jinja source statement by statement.
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"

namespace qed::chat_render {

// Qwen2.5-Instruct ChatML (no-tools branch): default system message when the first message is not a system one,
// role "tool" wrapped in <tool_response> inside a user turn, unknown roles dropped.
std::string qwen25(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                   const std::optional<std::string>& default_system);

// Qwen3 (hybrid thinking, no-tools branch): reasoning kept only for assistant turns after the last real user query.
std::string qwen3(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options);

// Llama-3-Instruct: bos first, every content trimmed, header ids around the role.
std::string llama3(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                   const std::string& bos_token, bool generation_prompt_always);

// The generic ChatML loop (every role rendered alike), optionally with Qwen2's default system message.
std::string plain_chatml(const std::vector<ChatMessage>& messages, const ChatTemplate::Options& options,
                         const std::optional<std::string>& default_system);

}  // namespace qed::chat_render
