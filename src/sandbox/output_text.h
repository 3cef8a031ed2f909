#pragma once
// Text shaping that must match NeMo-Skills' sandbox byte for byte: output truncation, the "Plain" traceback
// post-processing, and how Python's f-string prints the client's timeout number.
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qed::sandbox {

// Python's `s[:n] + "<output cut>"` when len(s) > n, counting code points (Python str length), not bytes.
std::string cut_output(std::string_view utf8, size_t max_chars);

// Bytes read from a pipe → valid UTF-8: each invalid sequence becomes U+FFFD (Python's errors="replace").
std::string to_valid_utf8(std::string_view bytes);

// NeMo-Skills' postprocess_output for traceback modes Plain/Minimal: strip ANSI escapes, drop lines that start
// with "File <ipython-", strip a leading "Out[N]:" prompt, drop leading blank lines, rstrip, then one "\n".
std::string postprocess_plain(std::string_view text);

// f"{timeout}" for the JSON number the client sent: 10 → "10", 10.0 → "10.0", 1e-05 → "1e-05" (Python repr).
std::string python_number_text(const nlohmann::json& number);

// Python's repr(float): shortest round-trip digits; scientific when the exponent is < -4 or >= 16.
std::string python_float_repr(double value);

}  // namespace qed::sandbox
