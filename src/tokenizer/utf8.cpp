#include "tokenizer/utf8.h"

#include <utf8proc.h>

namespace qed::utf8 {
namespace {

// Second-byte ranges from the Unicode standard's table of well-formed UTF-8 (Table 3-7); later bytes are 80..BF.
struct LeadInfo {
  uint8_t length;  // 0 = never valid as a first byte
  uint8_t second_lo;
  uint8_t second_hi;
};

constexpr LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// How many bytes starting at pos agree with a well-formed sequence (the whole length when complete).
size_t matching_prefix(std::string_view text, size_t pos, size_t& full_length) {
  const auto b = static_cast<uint8_t>(text[pos]);
  const LeadInfo info = lead_info(b);
  full_length = info.length;
  if (info.length == 0) return 0;
  if (info.length == 1) return 1;
  size_t n = 1;
  if (pos + n >= text.size()) return n;
  const auto second = static_cast<uint8_t>(text[pos + n]);
  if (second < info.second_lo || second > info.second_hi) return n;
  ++n;
  while (n < info.length) {
    if (pos + n >= text.size()) return n;
    const auto next = static_cast<uint8_t>(text[pos + n]);
    if (next < 0x80 || next > 0xBF) return n;
    ++n;
  }
  return n;
}

}  // namespace

size_t valid_sequence_length(std::string_view text, size_t pos) {
  size_t full = 0;
  const size_t n = matching_prefix(text, pos, full);
  return n == full ? n : 0;
}

size_t invalid_subpart_length(std::string_view text, size_t pos) {
  size_t full = 0;
  const size_t n = matching_prefix(text, pos, full);
  return n == 0 ? 1 : n;
}

bool is_valid(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = valid_sequence_length(text, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

void append_lossy(std::string& out, std::string_view bytes) {
  size_t pos = 0;
  size_t run_start = 0;
  while (pos < bytes.size()) {
    if (static_cast<uint8_t>(bytes[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = valid_sequence_length(bytes, pos);
    if (n != 0) {
      pos += n;
      continue;
    }
    out.append(bytes.substr(run_start, pos - run_start));
    out.append(kReplacement);
    pos += invalid_subpart_length(bytes, pos);
    run_start = pos;
  }
  out.append(bytes.substr(run_start));
}

size_t incomplete_tail_length(std::string_view bytes) {
  // A sequence is at most 4 bytes, so only a lead byte within the last 3 can start an incomplete one.
  const size_t lookback = bytes.size() < 3 ? bytes.size() : 3;
  for (size_t back = 1; back <= lookback; ++back) {
    const size_t pos = bytes.size() - back;
    const auto b = static_cast<uint8_t>(bytes[pos]);
    if (b >= 0x80 && b < 0xC0) continue;  // continuation byte: keep looking for its lead
    size_t full = 0;
    const size_t n = matching_prefix(bytes, pos, full);
    return (full > back && n == back) ? back : 0;
  }
  return 0;
}

size_t decode(std::string_view text, size_t pos, char32_t& code_point) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  if (b0 < 0x80) {
    code_point = b0;
    return 1;
  }
  const size_t n = b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  char32_t cp = b0 & (0x7F >> n);
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
  code_point = cp;
  return n;
}

size_t decode_last(std::string_view text, size_t end, char32_t& code_point) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return decode(text, start, code_point);
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_word_char(char32_t c) {
  if (c < 0x80) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }
  if (c == 0x200C || c == 0x200D) return true;  // Join_Control
  // Other_Alphabetic symbols (circled and squared Latin letters) are Alphabetic but category So.
  if ((c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
      (c >= 0x1F170 && c <= 0x1F189)) {
    return true;
  }
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

}  // namespace qed::utf8
