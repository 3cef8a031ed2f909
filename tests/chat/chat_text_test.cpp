// Python str methods as the templates use them; Jinja's `trim` is Python's str.strip(), so its notion of
// whitespace (Unicode, per str.isspace) is what Llama-3 prompts are cut by.
#include "tokenizer/chat_text.h"

#include <gtest/gtest.h>

#include <string>

namespace qed::chat_text {
namespace {

TEST(ChatText, StripWhitespaceRemovesAsciiWhitespaceBothSides) {
  EXPECT_EQ(strip_whitespace(" \t\n\r\v\fx y\n "), "x y");
}

TEST(ChatText, StripWhitespaceRemovesUnicodeSpacesPythonCallsWhitespace) {
  EXPECT_EQ(strip_whitespace("\u00a0\u3000\u2003x\u2028\u0085\x1f"), "x");
}

TEST(ChatText, StripWhitespaceKeepsZeroWidthSpaceWhichPythonDoesNotStrip) {
  EXPECT_EQ(strip_whitespace("\u200bx\u200b"), "\u200bx\u200b");
}

TEST(ChatText, StripWhitespaceOfOnlyWhitespaceIsEmpty) {
  EXPECT_EQ(strip_whitespace(" \u3000\n"), "");
}

TEST(ChatText, StripWhitespaceLeavesInvalidUtf8Alone) {
  const std::string text = "\x80 x \xe3\x80";  // stray continuation byte; truncated U+3000
  EXPECT_EQ(strip_whitespace(text), text);
  EXPECT_EQ(strip_whitespace(std::string("\xe3\x80\x80\x80")), "\x80");
}

TEST(ChatText, CharStripsOnlyThatCharacter) {
  EXPECT_EQ(lstrip_char("\n\n x\n", '\n'), " x\n");
  EXPECT_EQ(rstrip_char("\n x\n\n", '\n'), "\n x");
  EXPECT_EQ(strip_char("\n\n", '\n'), "");
}

TEST(ChatText, SplitFirstAndLastLikePythonSplitIndexing) {
  EXPECT_EQ(before_first("a</think>b</think>c", "</think>"), "a");
  EXPECT_EQ(after_last("a</think>b</think>c", "</think>"), "c");
  EXPECT_EQ(before_first("abc", "</think>"), "abc");
  EXPECT_EQ(after_last("abc", "<think>"), "abc");
}

}  // namespace
}  // namespace qed::chat_text
