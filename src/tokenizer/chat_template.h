#pragma once
// Chat templates rendered natively (no Jinja engine): the family is recognised from tokenizer_config.json's
// `chat_template`, and the output equals transformers' apply_chat_template(..., tokenize=False).
//
// Each family's renderer is a line-by-line transcription of the Jinja it replaces (see chat_render.cpp), so
// recognition is strict: a template whose wording differs in a way that changes the output is refused with a
// qed::Error naming the file rather than rendered almost right.
#include <optional>
#include <string>
#include <vector>

namespace qed {

struct ChatToolCall {
  std::string name;
  // JSON text of the arguments: an object, or a JSON string holding the object's text (OpenAI's wire form). The
  // templates differ here: Qwen3 writes a string's text as is, Qwen2.5 writes the JSON (a string stays quoted).
  std::string arguments_json;
};

struct ChatMessage {
  std::string role;  // system | user | assistant | tool (other roles: as the template does — Llama-3 renders
                     // them, the Qwen templates drop them)
  std::string content;
  // Qwen3 only: when set (even to ""), used as the assistant's reasoning instead of splitting `<think>…</think>`
  // out of `content` — the template's `message.reasoning_content is defined and is not none` branch.
  std::optional<std::string> reasoning_content = std::nullopt;
  std::vector<ChatToolCall> tool_calls = {};  // assistant turns that call tools (Qwen templates)
};

enum class ChatTemplateFamily { Qwen25ChatML, Qwen3, Llama3, PlainChatML };

const char* to_string(ChatTemplateFamily family);

class ChatTemplate {
 public:
  // Reads `chat_template` and `bos_token` from DIR/tokenizer_config.json (falling back to DIR/chat_template.jinja,
  // where transformers >= 4.47 saves the template); throws qed::Error if the file or template is unknown/missing.
  static ChatTemplate from_dir(const std::string& dir);
  // `source` names the file in errors ("unsupported chat template in <source>").
  static ChatTemplate from_config_text(const std::string& tokenizer_config_json, const std::string& source);
  // A bare Jinja template text (chat_template.jinja), with the bos token the template may reference.
  static ChatTemplate from_template_text(const std::string& jinja_text, const std::optional<std::string>& bos_token,
                                         const std::string& source);

  struct Options {
    bool add_generation_prompt = true;
    std::optional<bool> enable_thinking;  // Qwen3 only; absent = the template's `enable_thinking is defined` false
    // JSON text of each tool definition (apply_chat_template's `tools`); the Qwen templates list them in the system
    // turn, the Llama-3 and plain ChatML templates ignore them (as their Jinja does).
    std::vector<std::string> tools_json;
  };
  // Throws qed::Error on an empty conversation (transformers refuses it too) and on tool JSON that does not parse.
  std::string render(const std::vector<ChatMessage>& messages, const Options& options) const;
  std::string render(const std::vector<ChatMessage>& messages) const { return render(messages, Options{}); }
  ChatTemplateFamily family() const { return family_; }
  // The system message the template inserts when the conversation has none (Qwen2.5: "You are Qwen, …").
  const std::optional<std::string>& default_system_message() const { return default_system_; }

 private:
  ChatTemplateFamily family_ = ChatTemplateFamily::PlainChatML;
  std::string bos_token_;
  std::optional<std::string> default_system_;
  std::optional<std::string> tools_default_system_;  // Qwen2.5: the system text heading the tool list
  // The original Llama-3-Instruct template appends the assistant header even when add_generation_prompt is false.
  bool generation_prompt_always_ = false;
};

}  // namespace qed
