// The text side of the tool loop against NeMo-Skills' definitions (facts §1.3–1.5, §2.2): which code runs,
// how its output is written back, and the boxed answer.
#include <gtest/gtest.h>

#include "core/error.h"
#include "tir/boxed_answer.h"
#include "tir/code_tags.h"
#include "tir/sandbox_client.h"

namespace qed::tir {
namespace {

TEST(CodeToExecute, TakesTheCodeAfterTheLastOpeningTag) {
  EXPECT_EQ(code_to_execute("Let me compute.\n\n<tool_call>\nprint(pow(7, 2024, 1000))\n</tool_call>"),
            "\nprint(pow(7, 2024, 1000))\n");
  EXPECT_EQ(code_to_execute("<tool_call>a</tool_call>\n```output\n1\n```\nthen <tool_call>b</tool_call>"), "b");
}

TEST(CodeToExecute, NothingWhenTheTextDoesNotEndAnOpenToolCall) {
  EXPECT_EQ(code_to_execute("<tool_call>a</tool_call> done"), std::nullopt);  // not at the end
  EXPECT_EQ(code_to_execute("no call</tool_call>"), std::nullopt);            // never opened
  // The last opening tag is already closed: the final closing tag closes nothing.
  EXPECT_EQ(code_to_execute("<tool_call>a</tool_call></tool_call>"), std::nullopt);
}

TEST(FormatCodeOutput, IsStdoutThenStderrBetweenTheOpenmathTags) {
  EXPECT_EQ(format_code_output("401\n", "", std::nullopt), "\n```output\n401\n```\n");
  EXPECT_EQ(format_code_output("a\n", "Traceback\n", std::nullopt), "\n```output\na\nTraceback\n```\n");
}

TEST(FormatCodeOutput, RemainingExecutionsNoticeIsNeMoSkillsVerbatim) {
  EXPECT_EQ(format_code_output("1\n", "", 2),
            "\n```output\n1\n```\n```system\nRemaining code executions: 2. You will not be able to call code when "
            "you run out of executions, so use it wisely. Note that you can still continue solving the problem "
            "without code after that.\n```\n");
  EXPECT_EQ(format_code_output("1\n", "", 0),
            "\n```output\n1\n```\n```system\nYou have run out of code executions! You can no longer write or "
            "execute code. Now you should continue solving the problem by relying on your mathematical reasoning "
            "and analytical skills.\n```\n");
}

TEST(LastBoxed, TakesTheLastCompleteBoxWithNestedBraces) {
  EXPECT_EQ(last_boxed("so \\boxed{1} or rather \\boxed{\\frac{1}{2}}."), "\\frac{1}{2}");
  EXPECT_EQ(last_boxed("The remainder is \\boxed{401}.<|im_end|>"), "401");
  EXPECT_EQ(last_boxed("no box"), std::nullopt);
  EXPECT_EQ(last_boxed("\\boxed{unclosed"), std::nullopt);
}

TEST(SandboxUrl, ParsesHostAndPortAndRejectsTheRest) {
  const SandboxAddress a = parse_sandbox_url("http://127.0.0.1:6000/");
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 6000);
  EXPECT_THROW(parse_sandbox_url("127.0.0.1:6000"), Error);
  EXPECT_THROW(parse_sandbox_url("http://127.0.0.1"), Error);
  EXPECT_THROW(parse_sandbox_url("http://127.0.0.1:0"), Error);
  EXPECT_THROW(parse_sandbox_url("http://127.0.0.1:6000/execute"), Error);
}

}  // namespace
}  // namespace qed::tir
