#include "tokenizer/chat_text.h"

#include <cstdint>

namespace qed::chat_text {
namespace {

bool is_python_space(uint32_t cp) {
  if (cp <= 0x20) return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20);
  switch (cp) {
    case 0x85:
    case 0xa0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202f:
    case 0x205f:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200a;
  }
}

// Length of the UTF-8 sequence starting at s[i] and its code point; 0 if the bytes there are not valid UTF-8.
size_t decode_at(std::string_view s, size_t i, uint32_t& cp) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  size_t len = 0;
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  } else if ((b0 & 0xe0) == 0xc0) {
    len = 2;
    cp = b0 & 0x1f;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3;
    cp = b0 & 0x0f;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4;
    cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  return len;
}

// Start of the code point that ends at s[end - 1]: walks back over continuation bytes (at most 3).
size_t start_of_last(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && end - i < 4 && (static_cast<uint8_t>(s[i]) & 0xc0) == 0x80) --i;
  return i;
}

}  // namespace

std::string_view strip_whitespace(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    uint32_t cp = 0;
    const size_t len = decode_at(s, begin, cp);
    if (len == 0 || !is_python_space(cp)) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    const size_t start = start_of_last(s, end);
    uint32_t cp = 0;
    const size_t len = decode_at(s, start, cp);
    if (start < begin || len == 0 || start + len != end || !is_python_space(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

std::string_view lstrip_char(std::string_view s, char c) {
  const size_t begin = s.find_first_not_of(c);
  return begin == std::string_view::npos ? std::string_view{} : s.substr(begin);
}

std::string_view rstrip_char(std::string_view s, char c) {
  const size_t last = s.find_last_not_of(c);
  return last == std::string_view::npos ? std::string_view{} : s.substr(0, last + 1);
}

std::string_view strip_char(std::string_view s, char c) {
  return rstrip_char(lstrip_char(s, c), c);
}

std::string_view before_first(std::string_view s, std::string_view sep) {
  const size_t at = s.find(sep);
  return at == std::string_view::npos ? s : s.substr(0, at);
}

std::string_view after_last(std::string_view s, std::string_view sep) {
  const size_t at = s.rfind(sep);
  return at == std::string_view::npos ? s : s.substr(at + sep.size());
}

}  // namespace qed::chat_text
