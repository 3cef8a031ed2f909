// The A/B switch parser (env_switch.h): unset / empty take the default, "0" is off, anything else on.
#include "backend/cuda/env_switch.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace qed::testing {
namespace {

constexpr const char* kName = "QED_TEST_ENV_SWITCH";

TEST(EnvSwitch, FlagsReadZeroAsOffAndUnsetOrEmptyAsTheDefault) {
  unsetenv(kName);
  EXPECT_TRUE(cuda::env_flag(kName, true));
  EXPECT_FALSE(cuda::env_flag(kName, false));
  setenv(kName, "", 1);
  EXPECT_TRUE(cuda::env_flag(kName, true));
  EXPECT_FALSE(cuda::env_flag(kName, false));
  setenv(kName, "0", 1);
  EXPECT_FALSE(cuda::env_flag(kName, true));
  EXPECT_FALSE(cuda::env_flag(kName, false));
  for (const char* on : {"1", "yes", "00"}) {
    setenv(kName, on, 1);
    EXPECT_TRUE(cuda::env_flag(kName, false)) << on;
    EXPECT_TRUE(cuda::env_flag(kName, true)) << on;
  }
  unsetenv(kName);
}

TEST(EnvSwitch, StringsAndIntegers) {
  unsetenv(kName);
  EXPECT_EQ(cuda::env_string(kName), "");
  EXPECT_EQ(cuda::env_int(kName, 7), 7);
  setenv(kName, "", 1);
  EXPECT_EQ(cuda::env_int(kName, 7), 7);
  setenv(kName, "decode_gemv:w4f2u4", 1);
  EXPECT_EQ(cuda::env_string(kName), "decode_gemv:w4f2u4");
  EXPECT_EQ(cuda::env_int(kName, 7), 0);  // not a number: atoi's 0, as QED_CUDA_STEP_TIMING always read it
  setenv(kName, "25", 1);
  EXPECT_EQ(cuda::env_int(kName, 7), 25);
  unsetenv(kName);
}

}  // namespace
}  // namespace qed::testing
