#pragma once
// Which family a chat template belongs to, and the few values its renderer takes from it.
#include <optional>
#include <string>

#include "tokenizer/chat_template.h"

namespace qed::chat_recognize {

struct Recognized {
  ChatTemplateFamily family = ChatTemplateFamily::PlainChatML;
  std::optional<std::string> default_system;        // inserted when the conversation has no system message
  std::optional<std::string> tools_default_system;  // Qwen2.5: heads the tool list when there is no system message
  bool generation_prompt_always = false;            // original Llama-3-Instruct: header even without the flag
  bool uses_bos_token = false;
};

// Throws qed::Error("unsupported chat template in <source> (why)") for anything it cannot render exactly.
Recognized recognize(const std::string& jinja, const std::string& source);

}  // namespace qed::chat_recognize
