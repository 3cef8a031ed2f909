#include "tir/boxed_answer.h"

namespace qed::tir {

std::optional<std::string> last_boxed(std::string_view text) {
  constexpr std::string_view kTag = "\\boxed{";
  const size_t at = text.rfind(kTag);
  if (at == std::string_view::npos) return std::nullopt;
  int depth = 1;
  for (size_t i = at + kTag.size(); i < text.size(); ++i) {
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return std::string(text.substr(at + kTag.size(), i - at - kTag.size()));
  }
  return std::nullopt;
}

}  // namespace qed::tir
