#include "eval/prompt_template.h"

#include "core/error.h"

namespace qed::eval {

std::string builtin_prompt_template(const std::string& name) {
  if (name == "generic") {
    return "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n\n"
           "{examples}{problem}";
  }
  if (name == "tir") {
    return "Solve the following math problem, integrating natural language reasoning with Python code executions.\n"
           "You may perform up to {total_code_executions} Python code calls to assist your reasoning.\n"
           "Make sure to put the answer (and only answer) inside \\boxed{}.\n\n{problem}";
  }
  if (name == "plain") return "{problem}";
  fail("unknown prompt '{}' (generic, tir, plain; or --prompt-template FILE)", name);
}

std::string fill_prompt(const std::string& tmpl, const std::string& problem, int total_code_executions) {
  std::string out;
  out.reserve(tmpl.size() + problem.size());
  for (size_t i = 0; i < tmpl.size();) {
    auto at = [&](const char* key) { return tmpl.compare(i, std::char_traits<char>::length(key), key) == 0; };
    if (at("{problem}")) {
      out += problem;
      i += 9;
    } else if (at("{total_code_executions}")) {
      out += std::to_string(total_code_executions);
      i += 23;
    } else if (at("{examples}")) {
      i += 10;
    } else {
      out += tmpl[i++];
    }
  }
  return out;
}

}  // namespace qed::eval
