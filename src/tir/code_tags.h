#pragma once
// The text conventions of a tool turn, as NeMo-Skills' `openmath` code tags define them (facts §1.3–1.5): the
// model writes `<tool_call>CODE</tool_call>`, generation stops there, and the loop appends
// "\n```output\n" + stdout + stderr + "```\n" (plus, optionally, a notice of the executions left).
#include <optional>
#include <string>
#include <string_view>

namespace qed::tir {

struct CodeTags {
  std::string code_begin = "<tool_call>";
  std::string code_end = "</tool_call>";
  std::string output_begin = "\n```output\n";
  std::string output_end = "```\n";
};

// The code to run when `generation` ends a tool call: the text after the LAST code_begin, up to the final
// code_end. None when the generation does not end with code_end or that code_end closes no open code_begin (NS:
// `output.endswith(code_end) and output.rfind(code_begin) > output.rfind(code_end, 0, -1)`).
std::optional<std::string> code_to_execute(std::string_view generation, const CodeTags& tags = {});

// NS format_code_output, format "qwen": stdout + stderr between the output tags, no process status.
// `remaining_executions` adds NS's system notice (add_remaining_code_executions=True); none leaves it out.
std::string format_code_output(std::string_view stdout_text, std::string_view stderr_text,
                               std::optional<int> remaining_executions, const CodeTags& tags = {});

}  // namespace qed::tir
