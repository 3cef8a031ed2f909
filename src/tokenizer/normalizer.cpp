#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace qed::tok {
namespace {

bool is_ascii(std::string_view text) {
  for (const char c : text) {
    if (static_cast<uint8_t>(c) >= 0x80) return false;
  }
  return true;
}

utf8proc_option_t options_for(NormalizationForm form) {
  switch (form) {
    case NormalizationForm::kNFC:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    case NormalizationForm::kNFD:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    case NormalizationForm::kNFKC:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    case NormalizationForm::kNFKD:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  return UTF8PROC_STABLE;
}

// One normalization form over valid UTF-8, reusing `code_points` between calls.
void normalize_into(std::string_view text, NormalizationForm form, std::vector<utf8proc_int32_t>& code_points,
                    std::string& out) {
  const utf8proc_option_t options = options_for(form);
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const auto length = static_cast<utf8proc_ssize_t>(text.size());
  if (code_points.size() < text.size() + 16) code_points.resize(text.size() + 16);
  utf8proc_ssize_t n = 0;
  while (true) {
    n = utf8proc_decompose_custom(bytes, length, code_points.data(), static_cast<utf8proc_ssize_t>(code_points.size()),
                                  options, nullptr, nullptr);
    if (n < 0) fail("tokenizer: normalization failed: {}", utf8proc_errmsg(n));
    if (static_cast<size_t>(n) <= code_points.size()) break;
    code_points.resize(static_cast<size_t>(n));  // decomposition grew the text; retry with room for all of it
  }
  n = utf8proc_normalize_utf32(code_points.data(), n, options);
  if (n < 0) fail("tokenizer: normalization failed: {}", utf8proc_errmsg(n));
  out.clear();
  out.reserve(static_cast<size_t>(n) * 2);
  for (utf8proc_ssize_t i = 0; i < n; ++i)
    utf8::append(out, static_cast<char32_t>(code_points[static_cast<size_t>(i)]));
}

}  // namespace

std::string_view Normalizer::apply(std::string_view text, std::string& buffer) const {
  // ASCII is invariant under every normalization form, and most text is ASCII.
  if (forms_.empty() || is_ascii(text)) return text;
  thread_local std::vector<utf8proc_int32_t> code_points;
  thread_local std::string pass;
  std::string_view current = text;
  for (const NormalizationForm form : forms_) {
    normalize_into(current, form, code_points, pass);
    buffer.swap(pass);
    current = buffer;
  }
  return current;
}

}  // namespace qed::tok
