#pragma once
// String-level clean-up of a final answer before it is compared: what changes how an answer is written but not
// what it means (math delimiters, \left/\right, \dfrac, spacing commands, \text{} wrappers, units, degrees,
// percent signs, dollar signs, thousands separators, a leading "x =", a trailing full stop).
#include <string>
#include <string_view>

namespace qed::eval {

std::string normalize_answer(std::string_view answer);

}  // namespace qed::eval
