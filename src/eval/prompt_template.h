#pragma once
// The user-message templates eval sends (NeMo-Skills' prompt configs, facts §2.1, verbatim).
#include <string>

namespace qed::eval {

// generic: NeMo-Skills generic/math (OpenMath-Nemotron-14B-Kaggle, CoT and TIR); tir: openmath/tir, which names
// the number of code calls allowed; plain: the bare problem.
std::string builtin_prompt_template(const std::string& name);

// Replaces {problem}, {total_code_executions} and {examples} (empty); other braces are left as they are.
std::string fill_prompt(const std::string& tmpl, const std::string& problem, int total_code_executions);

}  // namespace qed::eval
