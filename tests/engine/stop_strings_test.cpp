#include "engine/stop_strings.h"

#include <gtest/gtest.h>

namespace qed {
namespace {

std::string feed(StopStringMatcher& m, const std::vector<std::string>& pieces, bool* stopped) {
  std::string out;
  *stopped = false;
  for (const auto& p : pieces) {
    auto r = m.push(p);
    out += r.text;
    if (r.stopped) {
      *stopped = true;
      return out;
    }
  }
  return out + m.flush();
}

TEST(StopStrings, StopSplitAcrossPiecesIsNotEmitted) {
  StopStringMatcher m({"</answer>"});
  bool stopped = false;
  EXPECT_EQ(feed(m, {"x = 4 </", "ans", "wer> trailing"}, &stopped), "x = 4 ");
  EXPECT_TRUE(stopped);
}

TEST(StopStrings, HoldStringEndsTheTextAndIsKept) {
  StopStringMatcher m({"STOP"}, {"</tool_call>"});
  std::string out;
  StopStringMatcher::Pushed r;
  for (const char* piece : {"x</tool", "_ca", "ll>tail"}) {
    r = m.push(piece);
    out += r.text;
    if (r.held) break;
  }
  EXPECT_TRUE(r.held);
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(out, "x</tool_call>");
  EXPECT_EQ(m.flush(), "tail");  // kept for the caller, which emits it when the sequence goes on
}

TEST(StopStrings, StopStartingBeforeTheEndOfAHoldStringWins) {
  StopStringMatcher m({"call>"}, {"</tool_call>"});
  const auto r = m.push("a</tool_call>");
  EXPECT_TRUE(r.stopped);
  EXPECT_FALSE(r.held);
  EXPECT_EQ(r.text, "a</tool_");
}

TEST(StopStrings, HoldsBackOnlyWhatCouldStartAStop) {
  StopStringMatcher m({"STOP"});
  EXPECT_EQ(m.push("abcST").text, "abc");
  EXPECT_EQ(m.push("x").text, "STx");  // "STx" can no longer become "STOP"
}

TEST(StopStrings, EarliestOfSeveralStopsWins) {
  StopStringMatcher m({"bb", "ab"});
  auto r = m.push("xxabb");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "xx");
}

TEST(StopStrings, HeldTextIsReleasedAtEndOfStream) {
  StopStringMatcher m({"\n\n"});
  EXPECT_EQ(m.push("done\n").text, "done");
  EXPECT_EQ(m.flush(), "\n");
}

TEST(StopStrings, NoStopsPassEverythingThrough) {
  StopStringMatcher m({});
  EXPECT_EQ(m.push("abc").text, "abc");
  EXPECT_EQ(m.flush(), "");
}

}  // namespace
}  // namespace qed
