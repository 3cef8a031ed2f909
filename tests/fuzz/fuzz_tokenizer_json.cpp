// libFuzzer: arbitrary bytes as tokenizer.json. Loading may only fail with qed::Error; a tokenizer that loads
// must encode and decode a short text without crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const qed::Tokenizer tokenizer = qed::Tokenizer::from_json_text(text, "fuzz.json");
    const auto ids = tokenizer.encode("Hi <|im_start|> e\xCC\x81 \xF0\x9F\x98\x80 12345 it's\n\n  x", true);
    (void)tokenizer.decode(ids, false);
    qed::IncrementalDetokenizer detok(tokenizer, true);
    for (const int32_t id : ids) (void)detok.push(id);
    (void)detok.flush();
  } catch (const qed::Error&) {
    // Malformed input is expected to be rejected with a message.
  }
  return 0;
}
