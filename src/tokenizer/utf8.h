#pragma once
// UTF-8 helpers with the exact semantics HF `tokenizers` inherits from Rust: invalid input is replaced the way
// `String::from_utf8_lossy` does it (one U+FFFD per maximal invalid subpart, the Unicode-recommended practice,
// which Python's errors="replace" follows too), and "whitespace"/"word character" mean what Rust's `regex` crate
// means by \s and \w (the added-token lstrip/rstrip/single_word rules are written with those).
#include <cstddef>
#include <string>
#include <string_view>

namespace qed::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence starting at text[pos], or 0 if it is invalid or truncated there.
size_t valid_sequence_length(std::string_view text, size_t pos);

// Length of the maximal subpart at text[pos] (>= 1): the bytes from_utf8_lossy replaces with one U+FFFD.
size_t invalid_subpart_length(std::string_view text, size_t pos);

bool is_valid(std::string_view text);

// Appends `bytes` to `out`, replacing invalid subparts by U+FFFD (Rust's from_utf8_lossy).
void append_lossy(std::string& out, std::string_view bytes);

// Number of trailing bytes of `bytes` that form an incomplete but still possibly valid UTF-8 sequence
// (0..3): a streaming decoder must hold them back until the character completes or turns out invalid.
size_t incomplete_tail_length(std::string_view bytes);

// Decodes the code point at text[pos] of valid UTF-8; returns its byte length.
size_t decode(std::string_view text, size_t pos, char32_t& code_point);
// Decodes the code point that ends at text[end] (exclusive) of valid UTF-8; returns its byte length.
size_t decode_last(std::string_view text, size_t end, char32_t& code_point);
void append(std::string& out, char32_t code_point);

// Unicode White_Space (Rust regex \s).
bool is_whitespace(char32_t c);
// Rust regex \w: Alphabetic, marks, decimal numbers, connector punctuation, join controls.
bool is_word_char(char32_t c);

}  // namespace qed::utf8
