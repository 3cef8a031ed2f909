#pragma once
// Pulling the final answer out of a generation, as NeMo-Skills' math_grader.extract_answer and
// utils.parse_reasoning do (facts §2.1, §2.2).
#include <optional>
#include <string>
#include <string_view>

namespace qed::eval {

// The inside of the LAST `\boxed{...}` (balanced braces, nested ones kept), unchanged. nullopt when there is no
// `\boxed`, when the last one is not followed by `{` (`\boxed 5`, as NeMo-Skills), or when its braces never close.
// `\fbox{...}` is used only when the text has no `\boxed` at all (NeMo-Skills' fallback for it is unreachable).
std::optional<std::string> extract_boxed(std::string_view text);

// NeMo-Skills' parse_reasoning: the text after the last `end_tag` (stripped); "" when the tag never occurs, so a
// generation that never finished thinking counts as "no answer".
std::string strip_reasoning(std::string_view text, std::string_view end_tag = "</think>");

}  // namespace qed::eval
