#include "tokenizer/chat_json.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace qed::chat_json {

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  // Shortest round-trip digits and exponent, then laid out by CPython's float_repr_style 'short' rules.
  char buffer[64];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  const std::string_view text(buffer, ec == std::errc() ? static_cast<size_t>(end - buffer) : 0);
  const size_t e = text.find('e');
  std::string_view mantissa = text.substr(0, e);
  std::string sign;
  if (mantissa.starts_with('-')) {
    sign = "-";
    mantissa.remove_prefix(1);
  }
  std::string digits;
  for (const char c : mantissa) {
    if (c != '.') digits += c;
  }
  const int exponent = std::atoi(std::string(text.substr(e + 1)).c_str());
  const int decimal_point = exponent + 1;  // digits[0 .. decimal_point) are the integer part
  if (decimal_point <= -4 || decimal_point > 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int shown = decimal_point - 1;
    out += shown < 0 ? "e-" : "e+";
    const std::string magnitude = std::to_string(std::abs(shown));
    return out + (magnitude.size() < 2 ? "0" : "") + magnitude;
  }
  if (decimal_point <= 0) return sign + "0." + std::string(static_cast<size_t>(-decimal_point), '0') + digits;
  const auto integer_digits = static_cast<size_t>(decimal_point);
  if (integer_digits >= digits.size()) return sign + digits + std::string(integer_digits - digits.size(), '0') + ".0";
  return sign + digits.substr(0, integer_digits) + "." + digits.substr(integer_digits);
}

std::string python_dumps(const nlohmann::ordered_json& value) {
  switch (value.type()) {
    case nlohmann::ordered_json::value_t::number_float:
      return python_float_repr(value.get<double>());
    case nlohmann::ordered_json::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < value.size(); ++i) out += (i == 0 ? "" : ", ") + python_dumps(value[i]);
      return out + "]";
    }
    case nlohmann::ordered_json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (const auto& [key, item] : value.items()) {
        out += (first ? "" : ", ") + nlohmann::ordered_json(key).dump() + ": " + python_dumps(item);
        first = false;
      }
      return out + "}";
    }
    default:
      // Strings escape like json.dumps(ensure_ascii=False): \" \\ \b \f \n \r \t, other controls as \u00xx.
      return value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  }
}

nlohmann::ordered_json parse(std::string_view json_text, std::string_view what) {
  try {
    return nlohmann::ordered_json::parse(json_text);
  } catch (const nlohmann::ordered_json::parse_error& e) {
    fail("{}: invalid JSON: {}", what, e.what());
  }
}

}  // namespace qed::chat_json
