// libFuzzer: arbitrary bytes as a chat template and as a tokenizer_config.json; whatever loads renders the same
// bytes as message, reasoning and tool text. Loading may only fail with qed::Error; rendering may only fail with
// qed::Error for tool JSON that does not parse. Seeds: the chat template fixtures.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace {

void render_some(const qed::ChatTemplate& chat_template, const std::string& text) {
  qed::ChatMessage answer{"assistant", text};
  answer.tool_calls = {{"f", text}};
  const std::vector<qed::ChatMessage> conversation = {
      {"system", text}, {"user", text}, answer, {"tool", text}, {"assistant", "<think>" + text + "</think>" + text}};
  for (const bool thinking : {false, true}) {
    qed::ChatTemplate::Options options;
    options.enable_thinking = thinking;
    if (thinking) options.tools_json = {text};
    try {
      (void)chat_template.render(conversation, options);
    } catch (const qed::Error&) {
      // Tool JSON that does not parse is rejected with a message.
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const bool as_config : {false, true}) {
    try {
      const qed::ChatTemplate chat_template = as_config ? qed::ChatTemplate::from_config_text(text, "fuzz.json")
                                                        : qed::ChatTemplate::from_template_text(text, "<s>", "fuzz");
      render_some(chat_template, text);
    } catch (const qed::Error&) {
      // Unknown or malformed templates are expected to be rejected with a message.
    }
  }
  return 0;
}
