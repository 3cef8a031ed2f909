#include "eval/answer_grader.h"

#include <gtest/gtest.h>

#include <string>

#include "eval/answer_normalization.h"

namespace qed::eval {

namespace {
bool same(const std::string& ref, const std::string& pred) {
  return answers_match(ref, pred);
}
}  // namespace

TEST(NormalizeAnswer, StripsFormattingThatCarriesNoValue) {
  EXPECT_EQ(normalize_answer("$\\dfrac{1}{2}$"), "\\frac{1}{2}");
  EXPECT_EQ(normalize_answer("\\left( 1, 2 \\right)"), "( 1, 2 )");
  EXPECT_EQ(normalize_answer("30^\\circ"), "30");
  EXPECT_EQ(normalize_answer("50\\%"), "50");
  EXPECT_EQ(normalize_answer("1{,}000"), "1000");
  EXPECT_EQ(normalize_answer("12,345"), "12345");
  EXPECT_EQ(normalize_answer("5 \\text{ cm}^2"), "5");
  EXPECT_EQ(normalize_answer("x = 7."), "7");
}

TEST(AnswersMatch, NoPredictionIsWrong) {
  EXPECT_FALSE(answers_match("5", std::nullopt));
}

TEST(AnswersMatch, IntegersCompareExactlyBeyondDoublePrecision) {
  EXPECT_TRUE(same("123456789012345678901234", "123456789012345678901234"));
  EXPECT_FALSE(same("123456789012345678901234", "123456789012345678901235"));
}

TEST(AnswersMatch, FractionsRadicalsAndPi) {
  EXPECT_TRUE(same("\\frac{1}{2}", "0.5"));
  EXPECT_TRUE(same("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt3}"));
  EXPECT_TRUE(same("2\\sqrt{3}", "\\sqrt{12}"));
  EXPECT_TRUE(same("\\frac{\\pi}{2}", "\\pi/2"));
  EXPECT_FALSE(same("\\sqrt{2}", "\\sqrt{3}"));
  EXPECT_FALSE(same("-\\frac{24}{25}", "\\frac{24}{25}"));
}

TEST(AnswersMatch, DecimalsRoundToSixPlacesAsMathVerify) {
  EXPECT_TRUE(same("\\frac{1}{3}", "0.333333"));
  EXPECT_FALSE(same("\\frac{1}{3}", "0.333"));
  EXPECT_FALSE(same("\\pi", "3.14"));
}

TEST(AnswersMatch, ExpressionsWithVariablesByValue) {
  EXPECT_TRUE(same("x^2+2x+1", "(x+1)^2"));
  EXPECT_TRUE(same("6r^2-4r-24", "2(3r^2-2r-12)"));
  EXPECT_FALSE(same("x^2-1", "x^2+1"));
  EXPECT_FALSE(same("2k", "2n"));
}

TEST(AnswersMatch, TuplesIntervalsSetsMatrices) {
  EXPECT_TRUE(same("(1,2)", "\\left(1, 2\\right)"));
  EXPECT_FALSE(same("(1,2)", "(2,1)"));
  EXPECT_FALSE(same("[-2,7]", "(-2,7]"));
  EXPECT_TRUE(same("(-\\infty,2)\\cup(3,\\infty)", "(3, \\infty) \\cup (-\\infty, 2)"));
  EXPECT_TRUE(same("\\{1,2,3\\}", "\\{3,2,1\\}"));
  EXPECT_TRUE(same("-2,1", "1, -2"));
  EXPECT_TRUE(same("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"));
  EXPECT_FALSE(same("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"));
}

TEST(AnswersMatch, EquationsAndAssignments) {
  EXPECT_TRUE(same("y = -2x", "y=-2x"));
  EXPECT_TRUE(same("5", "x = 5"));
  EXPECT_TRUE(same("x \\in [-2,7]", "[-2,7]"));
  EXPECT_FALSE(same("y = -2x", "y = 2x"));
}

TEST(AnswersMatch, MixedNumbersPlusMinusAndBases) {
  EXPECT_TRUE(same("137 \\frac{1}{2}", "137.5"));
  EXPECT_TRUE(same("1 \\pm \\sqrt{19}", "1-\\sqrt{19}, 1+\\sqrt{19}"));
  EXPECT_TRUE(same("2516_8", "2516"));
}

TEST(AnswersMatch, TextAndChoices) {
  EXPECT_TRUE(same("\\text{east}", "East"));
  EXPECT_FALSE(same("\\text{east}", "west"));
  EXPECT_TRUE(same("C", "\\text{(C)}"));
  EXPECT_FALSE(same("C", "B"));
}

TEST(AnswersMatch, TakeModuloComparesIntegerResidues) {
  GradeOptions aimo;
  aimo.take_modulo = 1000;
  EXPECT_TRUE(answers_match("204", std::string("1204"), aimo));
  EXPECT_FALSE(answers_match("204", std::string("205"), aimo));
  EXPECT_FALSE(answers_match("204", std::string("\\frac{1}{2}"), aimo));
}

TEST(AnswersMatch, HostileInputIsWrongNotACrashOrAHang) {
  std::string nested(100000, '{');
  EXPECT_FALSE(same("1", nested));
  std::string deep;
  for (int i = 0; i < 1500; ++i) deep += "\\frac{1}{";
  EXPECT_FALSE(same("1", deep + "2" + std::string(1500, '}')));
  EXPECT_FALSE(same("1", "10^{10^{10^{10}}}"));
  EXPECT_FALSE(same("1", "\\frac{1}{0}"));
  EXPECT_FALSE(same("1", "1000000!"));
  EXPECT_FALSE(same("1", std::string("\\sqrt") + std::string(5000, '(')));
  EXPECT_FALSE(same("\\infty", "-\\infty"));
}

}  // namespace qed::eval
