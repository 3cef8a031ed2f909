#include "sandbox/capped_buffer.h"

#include <gtest/gtest.h>

namespace qed::sandbox {
namespace {

TEST(CappedBuffer, KeepsEverythingUnderTheLimit) {
  CappedBuffer b(10);
  b.append("abc");
  b.append("def");
  EXPECT_EQ(b.data(), "abcdef");
  EXPECT_FALSE(b.truncated());
}

TEST(CappedBuffer, KeepsOnlyThePrefixAndCountsTheRest) {
  CappedBuffer b(4);
  b.append("ab");
  b.append("cdef");
  b.append(std::string(1 << 20, 'x'));
  EXPECT_EQ(b.data(), "abcd");
  EXPECT_TRUE(b.truncated());
  EXPECT_EQ(b.total_bytes(), 6u + (1u << 20));
}

TEST(CappedBuffer, ZeroLimitKeepsNothing) {
  CappedBuffer b(0);
  b.append("x");
  EXPECT_EQ(b.data(), "");
  EXPECT_TRUE(b.truncated());
}

}  // namespace
}  // namespace qed::sandbox
