// Output shaping must match NeMo-Skills' Python byte for byte: these are the cases Python decides.
#include "sandbox/output_text.h"

#include <gtest/gtest.h>

namespace qed::sandbox {
namespace {

TEST(CutOutput, ShortTextIsUnchanged) {
  EXPECT_EQ(cut_output("abc", 3), "abc");
}

TEST(CutOutput, LongTextIsCutAtNCharactersPlusMarker) {
  EXPECT_EQ(cut_output("abcdef", 3), "abc<output cut>");
}

TEST(CutOutput, CountsCodePointsNotBytes) {
  // Python: ("é" * 5)[:2] + "<output cut>"
  EXPECT_EQ(cut_output("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9", 2), "\xC3\xA9\xC3\xA9<output cut>");
  EXPECT_EQ(cut_output("\xF0\x9F\x98\x80", 1), "\xF0\x9F\x98\x80");
}

TEST(CutOutput, ZeroKeepsOnlyTheMarker) {
  EXPECT_EQ(cut_output("x", 0), "<output cut>");
  EXPECT_EQ(cut_output("", 0), "");
}

TEST(ToValidUtf8, ReplacesInvalidBytesLikePythonErrorsReplace) {
  EXPECT_EQ(to_valid_utf8("a\xFF"
                          "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(to_valid_utf8("\xC3"), "\xEF\xBF\xBD");                                  // truncated sequence
  EXPECT_EQ(to_valid_utf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(to_valid_utf8("ok \xE2\x88\x91"), "ok \xE2\x88\x91");
}

TEST(PostprocessPlain, DropsIpythonFileLinesAndOutPrompt) {
  std::string raw =
      "Traceback (most recent call last):\n  File <ipython-input-1-abc>:1\n    1/0\n"
      "ZeroDivisionError: division by zero\n\n";
  EXPECT_EQ(postprocess_plain(raw),
            "Traceback (most recent call last):\n    1/0\nZeroDivisionError: division by zero\n");
  EXPECT_EQ(postprocess_plain("Out[3]: 42\n"), "42\n");
  EXPECT_EQ(postprocess_plain("Out[0]: \n[1,\n 2]\n"), "[1,\n 2]\n");
}

TEST(PostprocessPlain, StripsAnsiLeadingBlankLinesAndTrailingSpace) {
  EXPECT_EQ(postprocess_plain("\x1B[31mred\x1B[39m\n"), "red\n");
  EXPECT_EQ(postprocess_plain("\n\nx  \n\n"), "x\n");
  EXPECT_EQ(postprocess_plain(""), "");
  EXPECT_EQ(postprocess_plain("\n \n"), "");
}

TEST(PythonNumberText, IntegersStayIntegers) {
  EXPECT_EQ(python_number_text(nlohmann::json::parse("10")), "10");
  EXPECT_EQ(python_number_text(nlohmann::json::parse("-3")), "-3");
}

TEST(PythonNumberText, FloatsPrintLikePythonRepr) {
  auto repr = [](const char* text) { return python_number_text(nlohmann::json::parse(text)); };
  EXPECT_EQ(repr("10.0"), "10.0");
  EXPECT_EQ(repr("0.5"), "0.5");
  EXPECT_EQ(repr("2.25"), "2.25");
  EXPECT_EQ(repr("1e2"), "100.0");
  EXPECT_EQ(repr("0.1"), "0.1");
  EXPECT_EQ(repr("0.0001"), "0.0001");
  EXPECT_EQ(repr("0.00001"), "1e-05");
  EXPECT_EQ(repr("1e15"), "1000000000000000.0");
  EXPECT_EQ(repr("1e16"), "1e+16");
  EXPECT_EQ(repr("1.5e300"), "1.5e+300");
  EXPECT_EQ(repr("123456.789"), "123456.789");
  EXPECT_EQ(repr("-0.0"), "-0.0");
}

}  // namespace
}  // namespace qed::sandbox
