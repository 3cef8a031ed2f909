#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

namespace qed {
namespace {

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(bf16_to_float(float_to_bf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

TEST(F16, RoundTripsEveryFiniteHalf) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    uint16_t h = uint16_t(bits);
    if (((h >> 10) & 0x1F) == 0x1F) continue;  // inf/nan
    EXPECT_EQ(float_to_f16(f16_to_float(h)), h) << std::hex << bits;
  }
  EXPECT_FLOAT_EQ(f16_to_float(0x3C00), 1.0f);
  EXPECT_FLOAT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
}

TEST(F8E4M3, MatchesTorchFloat8E4M3fnTable) {
  EXPECT_EQ(f8e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(f8e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(f8e4m3_to_float(0x38), 1.0f);
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(0x7F)));
  for (int code = 0; code < 0x7F; ++code) {
    EXPECT_EQ(float_to_f8e4m3(f8e4m3_to_float(uint8_t(code))), code);
    EXPECT_EQ(float_to_f8e4m3(-f8e4m3_to_float(uint8_t(code))), code == 0 ? 0x80 : (code | 0x80));
  }
  EXPECT_EQ(float_to_f8e4m3(1000.0f), 0x7E);  // saturates
  // 1.0625 lies halfway between 1.0 (0x38) and 1.125 (0x39): ties to even.
  EXPECT_EQ(float_to_f8e4m3(1.0625f), 0x38);
}

TEST(DType, NamesRoundTrip) {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I8, DType::U8, DType::I32, DType::I64}) {
    EXPECT_EQ(dtype_from_name(dtype_name(d)), d);
  }
  EXPECT_FALSE(dtype_from_name("F4").has_value());
}

}  // namespace
}  // namespace qed
