#pragma once
// Is a predicted final answer the reference answer? NeMo-Skills' math_equal (facts §2.3) with a native
// comparison in place of sympy: take_modulo for AIMO integer answers, multiple-choice letters, normalized string
// equality, then value equality over the parsed LaTeX (see math_expression.h).
#include <optional>
#include <string>
#include <string_view>

namespace qed::eval {

struct GradeOptions {
  std::optional<long long> take_modulo;  // compare int(ref) % m with int(pred) % m (AIMO: answers are 0..999)
};

// `pred` is the extracted answer (nullopt: the generation had none, which is wrong).
bool answers_match(std::string_view ref, const std::optional<std::string>& pred, const GradeOptions& options = {});

}  // namespace qed::eval
