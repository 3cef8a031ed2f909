#include "sandbox/output_text.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <vector>

namespace qed::sandbox {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 when it is invalid (overlong, surrogate, truncated...).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  uint32_t min = 0;
  uint32_t cp = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 2, min = 0x80, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, min = 0x800, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool is_python_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Matches \x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~]) at s[i]; returns the match length or 0.
size_t ansi_escape_length(std::string_view s, size_t i) {
  if (s[i] != '\x1B' || i + 1 >= s.size()) return 0;
  char c = s[i + 1];
  if (c == '[') {
    size_t k = i + 2;
    while (k < s.size() && s[k] >= '0' && s[k] <= '?') ++k;
    while (k < s.size() && s[k] >= ' ' && s[k] <= '/') ++k;
    if (k < s.size() && s[k] >= '@' && s[k] <= '~') return k + 1 - i;
    return 0;
  }
  if ((c >= '@' && c <= 'Z') || c == '\\' || c == '-' || c == '_') return 2;
  return 0;
}

std::string strip_ansi(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = ansi_escape_length(s, i);
    if (n) {
      i += n;
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

// "^Out\[\d+\]:\s*" at the start of a line.
std::string_view strip_out_prompt(std::string_view line) {
  if (line.substr(0, 4) != "Out[") return line;
  size_t k = 4;
  while (k < line.size() && line[k] >= '0' && line[k] <= '9') ++k;
  if (k == 4 || line.substr(k, 2) != "]:") return line;
  k += 2;
  while (k < line.size() && is_python_space(line[k])) ++k;
  return line.substr(k);
}

}  // namespace

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    size_t n = utf8_sequence_length(bytes, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string cut_output(std::string_view utf8, size_t max_chars) {
  size_t chars = 0;
  size_t i = 0;
  while (i < utf8.size() && chars < max_chars) {
    size_t n = utf8_sequence_length(utf8, i);
    i += n ? n : 1;
    ++chars;
  }
  if (i >= utf8.size()) return std::string(utf8);
  std::string out(utf8.substr(0, i));
  out.append("<output cut>");
  return out;
}

std::string postprocess_plain(std::string_view text) {
  std::string clean = strip_ansi(text);
  std::vector<std::string_view> lines;
  std::string_view rest = clean;
  while (true) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    size_t first = 0;
    while (first < line.size() && is_python_space(line[first])) ++first;
    if (line.substr(first).substr(0, 14) != "File <ipython-") lines.push_back(strip_out_prompt(line));
    if (nl == std::string_view::npos) break;
    rest = rest.substr(nl + 1);
  }
  size_t begin = 0;
  while (begin < lines.size() && lines[begin].empty()) ++begin;
  std::string out;
  for (size_t i = begin; i < lines.size(); ++i) {
    if (i > begin) out += '\n';
    out.append(lines[i]);
  }
  while (!out.empty() && is_python_space(out.back())) out.pop_back();
  if (!out.empty()) out += '\n';
  return out;
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  // Shortest round-trip digits in scientific form: d.ddde±X.
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string sci(buf, result.ptr);
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  int exponent = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits += c;
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  int decimal_point = exponent + 1;  // digits d1d2… mean 0.d1d2… × 10^decimal_point
  // Built with append(): GCC 12 reports a false -Wrestrict on chains of std::string operator+.
  std::string out = negative ? "-" : "";
  if (decimal_point > 16 || decimal_point < -3) {
    out.append(digits, 0, 1);
    if (digits.size() > 1) out.append(".").append(digits, 1);
    out.append(fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent)));
  } else if (decimal_point <= 0) {
    out.append("0.").append(static_cast<size_t>(-decimal_point), '0').append(digits);
  } else if (static_cast<size_t>(decimal_point) >= digits.size()) {
    out.append(digits).append(static_cast<size_t>(decimal_point) - digits.size(), '0').append(".0");
  } else {
    out.append(digits, 0, static_cast<size_t>(decimal_point)).append(".");
    out.append(digits, static_cast<size_t>(decimal_point));
  }
  return out;
}

std::string python_number_text(const nlohmann::json& number) {
  if (number.is_number_integer()) return number.dump();
  if (number.is_number_float()) return python_float_repr(number.get<double>());
  return number.dump();
}

}  // namespace qed::sandbox
