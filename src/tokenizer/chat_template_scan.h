#pragma once
// Reduces a Jinja chat template to what decides its output, so recognition does not depend on formatting.
#include <string>
#include <string_view>

namespace qed::chat_scan {

struct TemplateShape {
  // Every `{{ … }}` and `{% … %}` tag in order: whitespace-control dashes and whitespace outside string literals
  // removed, raw newlines/tabs inside literals written as `\n`/`\t`, every quote written as `'`, and
  // `x['role']` / `x['content']` written as `x.role` / `x.content`. Comments are dropped.
  std::string code;
  // The literal text the template writes between tags, after Jinja's whitespace control as transformers configures
  // it (trim_blocks, lstrip_blocks, no trailing newline). Empty for every template we recognise.
  std::string literal_text;
  bool unterminated_tag = false;
};

TemplateShape scan(std::string_view jinja);

// The value of a Jinja string literal starting at `text[at]` (a quote); escapes \n \t \\ \' \" decoded.
// Returns false when no closing quote follows.
bool read_string_literal(std::string_view text, size_t at, std::string& value);

}  // namespace qed::chat_scan
