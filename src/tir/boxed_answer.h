#pragma once
// The final answer of a math generation: the content of its last \boxed{...} (braces balanced), as NeMo-Skills'
// extract_answer reads it (facts §2.2). None when there is no complete \boxed{}.
#include <optional>
#include <string>
#include <string_view>

namespace qed::tir {

std::optional<std::string> last_boxed(std::string_view text);

}  // namespace qed::tir
