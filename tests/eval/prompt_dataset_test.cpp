#include <gtest/gtest.h>

#include "eval/dataset.h"
#include "eval/prompt_template.h"

namespace qed::eval {

TEST(PromptTemplate, GenericIsNemoSkillsGenericMathVerbatim) {
  EXPECT_EQ(fill_prompt(builtin_prompt_template("generic"), "What is 1+1?", 8),
            "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n\n"
            "What is 1+1?");
}

TEST(PromptTemplate, TirNamesTheCodeCallBudget) {
  std::string p = fill_prompt(builtin_prompt_template("tir"), "P", 3);
  EXPECT_NE(p.find("You may perform up to 3 Python code calls"), std::string::npos);
  EXPECT_EQ(p.substr(p.size() - 3), "\n\nP");
}

TEST(PromptTemplate, UnknownNameIsAnError) {
  EXPECT_THROW(builtin_prompt_template("cot"), std::exception);
}

TEST(Dataset, NamedDatasetsResolveToTheSharedData) {
  auto problems = load_dataset(resolve_dataset("aime24"));
  EXPECT_EQ(problems.size(), 30u);
  EXPECT_EQ(problems[0].expected_answer, "204");
}

TEST(Dataset, AnUnknownNameListsWhereItLooked) {
  try {
    resolve_dataset("no_such_set");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_set.jsonl"), std::string::npos) << e.what();
  }
}

}  // namespace qed::eval
