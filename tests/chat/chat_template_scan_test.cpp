// Template recognition must not depend on formatting but must see every character the template outputs.
#include "tokenizer/chat_template_scan.h"

#include <gtest/gtest.h>

namespace qed::chat_scan {
namespace {

TEST(ChatTemplateScan, FormattingAndQuoteStyleDoNotChangeTheCode) {
  const TemplateShape compact = scan("{%- for m in messages %}{{- m['role'] + \"\\n\" }}{%- endfor %}");
  const TemplateShape spread = scan("{% for m in messages %}\n    {{- m.role + '\\n' -}}\n{% endfor %}\n");
  EXPECT_EQ(compact.code, "{%forminmessages%}{{m.role+'\\n'}}{%endfor%}");
  EXPECT_EQ(spread.code, compact.code);
  EXPECT_EQ(spread.literal_text, "");
}

TEST(ChatTemplateScan, RawNewlineInALiteralEqualsTheEscapedSpelling) {
  EXPECT_EQ(scan("{{ 'a\nb' }}").code, scan("{{ 'a\\nb' }}").code);
  EXPECT_NE(scan("{{ 'a b' }}").code, scan("{{ 'ab' }}").code);
}

TEST(ChatTemplateScan, TextBetweenTagsIsReportedAsLiteral) {
  EXPECT_EQ(scan("{% for m in messages %}[{{ m.role }}]\n{% endfor %}").literal_text, "[]\n");
}

TEST(ChatTemplateScan, TrimBlocksAndLstripBlocksDropIndentAndNewlineAroundBlockTags) {
  EXPECT_EQ(scan("  {% if x %}\n  {% endif %}\n").literal_text, "");
  // An expression tag is not a block: the newline after it is output.
  EXPECT_EQ(scan("{{ x }}\n{{ y }}").literal_text, "\n");
}

TEST(ChatTemplateScan, DelimitersInsideStringsDoNotCloseTheTag) {
  const TemplateShape shape = scan("{{ '}}' + \"%}\" }}");
  EXPECT_FALSE(shape.unterminated_tag);
  EXPECT_EQ(shape.code, "{{'}}'+'%}'}}");
}

TEST(ChatTemplateScan, UnterminatedTagIsFlagged) {
  EXPECT_TRUE(scan("{{ 'x' ").unterminated_tag);
}

TEST(ChatTemplateScan, CommentsAreDropped) {
  const TemplateShape shape = scan("{# a comment #}{{ x }}");
  EXPECT_EQ(shape.code, "{{x}}");
  EXPECT_EQ(shape.literal_text, "");
}

TEST(ChatTemplateScan, StringLiteralEscapesAreDecoded) {
  std::string value;
  ASSERT_TRUE(read_string_literal("'a\\nb\\'c'", 0, value));
  EXPECT_EQ(value, "a\nb'c");
  EXPECT_FALSE(read_string_literal("'open", 0, value));
}

}  // namespace
}  // namespace qed::chat_scan
