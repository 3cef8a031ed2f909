#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace qed::byte_level {
namespace {

struct Tables {
  std::array<char32_t, 256> byte_to_char{};
  std::array<int16_t, 324> char_to_byte{};  // the alphabet lies in U+0000..U+0143
};

constexpr bool stands_for_itself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

constexpr Tables make_tables() {
  Tables t;
  for (auto& v : t.char_to_byte) v = -1;
  char32_t next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    const char32_t c = stands_for_itself(b) ? static_cast<char32_t>(b) : next_extra++;
    t.byte_to_char[static_cast<size_t>(b)] = c;
    t.char_to_byte[c] = static_cast<int16_t>(b);
  }
  return t;
}

constexpr Tables kTables = make_tables();

}  // namespace

char32_t char_for_byte(uint8_t byte) {
  return kTables.byte_to_char[byte];
}

int byte_for_char(char32_t c) {
  return c < kTables.char_to_byte.size() ? kTables.char_to_byte[c] : -1;
}

std::optional<std::string> to_bytes(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    if (utf8::valid_sequence_length(token, pos) == 0) return std::nullopt;
    char32_t c = 0;
    pos += utf8::decode(token, pos, c);
    const int b = byte_for_char(c);
    if (b < 0) return std::nullopt;
    out.push_back(static_cast<char>(b));
  }
  return out;
}

}  // namespace qed::byte_level
