#pragma once
// Chat templates rendered natively (no Jinja engine): the family is recognised from tokenizer_config.json's
// `chat_template`, and the output equals transformers' apply_chat_template(..., tokenize=False).
#include <optional>
#include <string>
#include <vector>

namespace qed {

struct ChatMessage {
  std::string role;  // system | user | assistant | tool
  std::string content;
};

enum class ChatTemplateFamily { Qwen25ChatML, Qwen3, Llama3, PlainChatML };

class ChatTemplate {
 public:
  // Reads `chat_template`, `bos_token` from DIR/tokenizer_config.json; throws qed::Error if unknown/missing.
  static ChatTemplate from_dir(const std::string& dir);
  static ChatTemplate from_config_text(const std::string& tokenizer_config_json, const std::string& source);

  struct Options {
    bool add_generation_prompt = true;
    std::optional<bool> enable_thinking;  // Qwen3 only
  };
  std::string render(const std::vector<ChatMessage>& messages, const Options& options) const;
  std::string render(const std::vector<ChatMessage>& messages) const { return render(messages, Options{}); }
  ChatTemplateFamily family() const { return family_; }

 private:
  ChatTemplateFamily family_ = ChatTemplateFamily::PlainChatML;
  std::string bos_token_;
};

}  // namespace qed
