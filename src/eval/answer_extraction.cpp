#include "eval/answer_extraction.h"

namespace qed::eval {

namespace {

std::optional<std::string> braced_after(std::string_view text, size_t command_pos, std::string_view command) {
  size_t open = command_pos + command.size();
  if (open >= text.size() || text[open] != '{') return std::nullopt;
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return std::string(text.substr(open + 1, i - open - 1));
  }
  return std::nullopt;
}

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

std::optional<std::string> extract_boxed(std::string_view text) {
  if (size_t pos = text.rfind("\\boxed"); pos != std::string_view::npos) return braced_after(text, pos, "\\boxed");
  if (size_t pos = text.rfind("\\fbox"); pos != std::string_view::npos) return braced_after(text, pos, "\\fbox");
  return std::nullopt;
}

std::string strip_reasoning(std::string_view text, std::string_view end_tag) {
  size_t pos = text.rfind(end_tag);
  if (pos == std::string_view::npos) return {};
  return std::string(trim(text.substr(pos + end_tag.size())));
}

}  // namespace qed::eval
