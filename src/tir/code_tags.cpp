#include "tir/code_tags.h"

namespace qed::tir {

std::optional<std::string> code_to_execute(std::string_view generation, const CodeTags& tags) {
  if (!generation.ends_with(tags.code_end)) return std::nullopt;
  const std::string_view before_end = generation.substr(0, generation.size() - tags.code_end.size());
  const size_t begin = before_end.rfind(tags.code_begin);
  if (begin == std::string_view::npos) return std::nullopt;
  // Python's rfind(code_end, 0, -1) drops only the last character, so it still finds a code_end that overlaps
  // the final one; with distinct tags that cannot happen, and an earlier code_end after `begin` closes it.
  const size_t earlier_end = before_end.rfind(tags.code_end);
  if (earlier_end != std::string_view::npos && earlier_end > begin) return std::nullopt;
  return std::string(before_end.substr(begin + tags.code_begin.size()));
}

std::string format_code_output(std::string_view stdout_text, std::string_view stderr_text,
                               std::optional<int> remaining_executions, const CodeTags& tags) {
  std::string out = tags.output_begin;
  out.append(stdout_text);
  out.append(stderr_text);
  out.append(tags.output_end);
  if (remaining_executions) {
    // Verbatim from NeMo-Skills' format_code_output.
    if (*remaining_executions > 0) {
      out += "```system\nRemaining code executions: " + std::to_string(*remaining_executions) +
             ". You will not be able to call code when you run out of executions, so use it wisely. Note that you "
             "can still continue solving the problem without code after that.\n```\n";
    } else {
      out +=
          "```system\nYou have run out of code executions! You can no longer write or execute code. Now you should "
          "continue solving the problem by relying on your mathematical reasoning and analytical skills.\n```\n";
    }
  }
  return out;
}

}  // namespace qed::tir
