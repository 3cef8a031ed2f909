#include "tokenizer/chat_template_scan.h"

namespace qed::chat_scan {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

void rstrip_all(std::string& s) {
  while (!s.empty() && is_space(s.back())) s.pop_back();
}

// Jinja's lstrip_blocks: spaces/tabs between the last newline and a block tag are not output.
void strip_line_indent(std::string& s) {
  size_t i = s.size();
  while (i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t')) --i;
  if (i == 0 || s[i - 1] == '\n') s.resize(i);
}

std::string canonical_code(std::string_view inner) {
  std::string out;
  char quote = 0;
  for (size_t i = 0; i < inner.size(); ++i) {
    const char c = inner[i];
    if (quote != 0) {
      if (c == '\\' && i + 1 < inner.size()) {
        out += c;
        out += inner[++i];
        continue;
      }
      // Inside a literal every character is output, so it is kept; a raw newline/tab is written as its escape,
      // the same string as the template spelling it '\n'.
      if (c == quote) {
        quote = 0;
        out += '\'';
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\t') {
        out += "\\t";
      } else {
        out += c;
      }
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      out += '\'';
    } else if (!is_space(c)) {
      out += c;
    }
  }
  for (const auto& [from, to] :
       {std::pair<std::string_view, std::string_view>{"['role']", ".role"}, {"['content']", ".content"}}) {
    for (size_t at = out.find(from); at != std::string::npos; at = out.find(from, at + to.size())) {
      out.replace(at, from.size(), to);
    }
  }
  return out;
}

}  // namespace

bool read_string_literal(std::string_view text, size_t at, std::string& value) {
  const char quote = text[at];
  value.clear();
  for (size_t i = at + 1; i < text.size(); ++i) {
    const char c = text[i];
    if (c == quote) return true;
    if (c == '\\' && i + 1 < text.size()) {
      const char e = text[++i];
      switch (e) {
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case '\\':
        case '\'':
        case '"':
          value += e;
          break;
        default:
          value += '\\';
          value += e;
      }
      continue;
    }
    value += c;
  }
  return false;
}

TemplateShape scan(std::string_view jinja) {
  TemplateShape shape;
  // Jinja's lexer drops one trailing newline (keep_trailing_newline=False).
  if (jinja.ends_with("\r\n")) {
    jinja.remove_suffix(2);
  } else if (jinja.ends_with('\n')) {
    jinja.remove_suffix(1);
  }
  std::string text;  // literal text pending since the last tag
  bool strip_next_leading = false;
  bool trim_next_newline = false;
  size_t i = 0;
  while (i < jinja.size()) {
    const size_t open = jinja.find('{', i);
    const bool is_tag = open != std::string_view::npos && open + 1 < jinja.size() &&
                        (jinja[open + 1] == '{' || jinja[open + 1] == '%' || jinja[open + 1] == '#');
    const size_t text_end = open == std::string_view::npos ? jinja.size() : (is_tag ? open : open + 1);
    std::string segment(jinja.substr(i, text_end - i));
    if (strip_next_leading) {
      const size_t first = segment.find_first_not_of(" \t\n\r\f\v");
      segment.erase(0, first == std::string::npos ? segment.size() : first);
    } else if (trim_next_newline && !segment.empty()) {
      if (segment.starts_with("\r\n")) {
        segment.erase(0, 2);
      } else if (segment.front() == '\n') {
        segment.erase(0, 1);
      }
    }
    if (!segment.empty()) {
      strip_next_leading = false;
      trim_next_newline = false;
    }
    text += segment;
    i = text_end;
    if (!is_tag) continue;

    const char kind = jinja[open + 1];
    const std::string_view close = kind == '{' ? "}}" : (kind == '%' ? "%}" : "#}");
    // Find the closing delimiter outside string literals (comments have no strings).
    size_t j = open + 2;
    char quote = 0;
    size_t close_at = std::string_view::npos;
    for (; j < jinja.size(); ++j) {
      const char c = jinja[j];
      if (quote != 0) {
        if (c == '\\') {
          ++j;
        } else if (c == quote) {
          quote = 0;
        }
        continue;
      }
      if (kind != '#' && (c == '\'' || c == '"')) {
        quote = c;
        continue;
      }
      if (jinja.substr(j, 2) == close) {
        close_at = j;
        break;
      }
    }
    if (close_at == std::string_view::npos) {
      shape.unterminated_tag = true;
      shape.literal_text += text;
      return shape;
    }
    std::string_view inner = jinja.substr(open + 2, close_at - open - 2);
    const bool strip_before = inner.starts_with('-');
    const bool keep_indent = inner.starts_with('+');
    const bool strip_after = inner.ends_with('-');
    if (strip_before || keep_indent) inner.remove_prefix(1);
    if (strip_after && !inner.empty()) inner.remove_suffix(1);
    if (strip_before) {
      rstrip_all(text);
    } else if (kind != '{' && !keep_indent) {
      strip_line_indent(text);
    }
    shape.literal_text += text;
    text.clear();
    if (kind != '#') shape.code += std::string(1, '{') + kind + canonical_code(inner) + std::string(close);
    strip_next_leading = strip_after;
    trim_next_newline = !strip_after && kind != '{';
    i = close_at + 2;
  }
  shape.literal_text += text;
  return shape;
}

}  // namespace qed::chat_scan
