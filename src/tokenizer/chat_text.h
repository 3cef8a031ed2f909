#pragma once
// Python `str` methods as the chat templates call them (Jinja runs them on Python strings), on UTF-8 bytes.
#include <string>
#include <string_view>

namespace qed::chat_text {

// str.strip() / Jinja's `trim` filter: removes leading and trailing code points for which Python's
// str.isspace() is true (ASCII whitespace, \x1c-\x1f, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
// U+202F, U+205F, U+3000). Invalid UTF-8 bytes are never whitespace.
std::string_view strip_whitespace(std::string_view s);

// str.lstrip(c) / str.rstrip(c) / str.strip(c) for a single ASCII character.
std::string_view lstrip_char(std::string_view s, char c);
std::string_view rstrip_char(std::string_view s, char c);
std::string_view strip_char(std::string_view s, char c);

// s.split(sep)[0] and s.split(sep)[-1]: the text before the first / after the last occurrence (all of s if absent).
std::string_view before_first(std::string_view s, std::string_view sep);
std::string_view after_last(std::string_view s, std::string_view sep);

}  // namespace qed::chat_text
