#include "eval/answer_extraction.h"

#include <gtest/gtest.h>

namespace qed::eval {

TEST(ExtractBoxed, TakesTheLastBox) {
  EXPECT_EQ(extract_boxed("\\boxed{1} then \\boxed{2}."), "2");
}

TEST(ExtractBoxed, KeepsNestedBraces) {
  EXPECT_EQ(extract_boxed("so \\boxed{\\frac{1}{\\sqrt{2}}} ok"), "\\frac{1}{\\sqrt{2}}");
}

TEST(ExtractBoxed, TextAnswersComeBackUnchanged) {
  EXPECT_EQ(extract_boxed("\\boxed{\\text{(C)}}"), "\\text{(C)}");
}

TEST(ExtractBoxed, NoBoxIsNoAnswer) {
  EXPECT_EQ(extract_boxed("The answer is 5."), std::nullopt);
}

TEST(ExtractBoxed, BoxWithoutBraceIsNoAnswerAsInNemoSkills) {
  EXPECT_EQ(extract_boxed("\\boxed 5"), std::nullopt);
}

TEST(ExtractBoxed, UnclosedBoxIsNoAnswer) {
  EXPECT_EQ(extract_boxed("\\boxed{\\frac{1}{2}"), std::nullopt);
}

TEST(ExtractBoxed, FboxOnlyWhenThereIsNoBoxed) {
  EXPECT_EQ(extract_boxed("\\fbox{7}"), "7");
  EXPECT_EQ(extract_boxed("\\fbox{7} \\boxed{8}"), "8");
}

TEST(StripReasoning, KeepsTheTextAfterTheLastThinkTag) {
  EXPECT_EQ(strip_reasoning("a \\boxed{1}</think>x</think>  final \\boxed{2} \n"), "final \\boxed{2}");
}

TEST(StripReasoning, UnfinishedThinkingIsEmpty) {
  EXPECT_EQ(strip_reasoning("thinking \\boxed{3}"), "");
}

}  // namespace qed::eval
