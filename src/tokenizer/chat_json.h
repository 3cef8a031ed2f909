#pragma once
// JSON written the way transformers' `tojson` filter writes it — Python's json.dumps(x, ensure_ascii=False):
// ", " and ": " separators, keys in their given order, floats as Python's repr (1e-05, 1e+16, 100.0).
// Tool definitions and tool-call arguments reach the prompt through it, so its bytes become tokens.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qed::chat_json {

std::string python_dumps(const nlohmann::ordered_json& value);

// Python's repr(float) for finite values (shortest round-trip digits; exponent form below 1e-4 or from 1e16).
std::string python_float_repr(double value);

// Parses JSON text (keys keep their order); throws qed::Error mentioning `what` when it is not valid JSON.
nlohmann::ordered_json parse(std::string_view json_text, std::string_view what);

}  // namespace qed::chat_json
