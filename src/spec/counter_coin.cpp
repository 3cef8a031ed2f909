#include "spec/counter_coin.h"

#include <fmt/format.h>

#include <charconv>

#include "core/error.h"

namespace qed::spec {

double parse_probability_label(const std::string& text, std::string_view prefix, std::string_view what) {
  if (!text.starts_with(prefix)) return -1;
  const std::string_view digits = std::string_view(text).substr(prefix.size());
  double p = -1;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), p);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() || !(p >= 0 && p <= 1))
    fail("'{}': {} must be a number in [0, 1] ({}0.6)", text, what, prefix);
  return p;
}

}  // namespace qed::spec
