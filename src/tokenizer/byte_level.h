#pragma once
// GPT-2's byte-level alphabet: every byte is written as one printable code point in vocab/merges strings
// (printable ASCII and most of Latin-1 stand for themselves; the other 68 bytes map to U+0100 upward).
// qed converts vocab strings back to raw bytes once at load time, so encoding never builds the mapped strings.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qed::byte_level {

// The code point that stands for `byte`.
char32_t char_for_byte(uint8_t byte);
// The byte a code point stands for, or -1 if it is outside the alphabet.
int byte_for_char(char32_t c);
// Raw bytes of a vocab string, or nullopt if any character is outside the alphabet (or the UTF-8 is invalid).
std::optional<std::string> to_bytes(std::string_view token);

}  // namespace qed::byte_level
