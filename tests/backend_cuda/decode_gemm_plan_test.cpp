// decode_gemm_plan (host code, no device): the table names a kernel that can take every decode shape of the 14B
// layers, and the launch descriptions carry the operands through unchanged.
#include "backend/cuda/decode_gemm_plan.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace qed::testing {
namespace {

TEST(DecodeGemmPlan, VariantNamesRoundTrip) {
  for (int v = 0; v < cuda::kDecodeGemvVariantCount; ++v) {
    const std::string name = cuda::decode_gemv_variant_name(v);
    EXPECT_EQ(cuda::decode_gemv_variant_index(name.c_str()), v) << name;
  }
  EXPECT_EQ(cuda::decode_gemv_variant_index("w3f3u3"), -1);
  EXPECT_EQ(cuda::decode_gemv_variant_index(""), -1);
}

TEST(DecodeGemmPlan, EveryDecodeShapeGetsAKernelThatTakesIt) {
  if (std::getenv("QED_DECODE_GEMM") != nullptr) GTEST_SKIP() << "QED_DECODE_GEMM overrides the table";
  const std::pair<int, int> layers[] = {{7168, 5120},   {5120, 5120}, {27648, 5120}, {5120, 13824},
                                        {152064, 5120}, {96, 48}};  // the last: a shape the table does not list
  for (cuda::SkinnyWeight type : {cuda::SkinnyWeight::Bf16, cuda::SkinnyWeight::Fp8E4m3, cuda::SkinnyWeight::Int8}) {
    for (const auto& [out, in] : layers) {
      for (int rows = 1; rows <= cuda::kSkinnyMaxRows; ++rows) {
        const cuda::DecodeGemmPlan plan = cuda::decode_gemm_plan(type, rows, out, in);
        const std::string what = "type " + std::to_string(int(type)) + " " + std::to_string(out) + "x" +
                                 std::to_string(in) + " rows " + std::to_string(rows);
        if (plan.kernel == cuda::DecodeGemmKernel::DecodeGemv) {
          EXPECT_TRUE(cuda::decode_gemv_supports(type, rows, in, out)) << what;
          EXPECT_GE(plan.gemv_variant, 0) << what;
          EXPECT_LT(plan.gemv_variant, cuda::kDecodeGemvVariantCount) << what;
        }
        // int8's only other path dequantizes into scratch that decode batches do not have.
        if (type == cuda::SkinnyWeight::Int8) {
          EXPECT_NE(plan.kernel, cuda::DecodeGemmKernel::Cublaslt) << what;
        }
      }
      EXPECT_EQ(cuda::decode_gemm_plan(type, cuda::kSkinnyMaxRows + 1, out, in).kernel,
                cuda::DecodeGemmKernel::Cublaslt);
    }
  }
}

TEST(DecodeGemmPlan, LaunchDescriptionsCarryTheOperands) {
  int storage[4] = {};
  cuda::DecodeGemmOperands o;
  o.x = &storage[0];
  o.w = &storage[1];
  o.type = cuda::SkinnyWeight::Fp8E4m3;
  o.x_scale = reinterpret_cast<const float*>(&storage[2]);
  o.w_scales = reinterpret_cast<const float*>(&storage[3]);
  o.per_channel = true;
  o.y = &storage[0];
  o.f32_out = true;
  o.rows = 3;
  o.out = 40;
  o.in = 64;
  cuda::DecodeGemmPlan plan;
  plan.kernel = cuda::DecodeGemmKernel::DecodeGemv;
  plan.gemv_variant = 2;
  plan.fp8_bits = true;
  plan.tiles_per_warp = 4;
  plan.splits = 3;
  const cuda::DecodeGemv g = cuda::decode_gemv_for(o, plan, true);
  EXPECT_EQ(g.x, o.x);
  EXPECT_EQ(g.w, o.w);
  EXPECT_EQ(g.type, o.type);
  EXPECT_EQ(g.x_scale, o.x_scale);
  EXPECT_EQ(g.w_scales, o.w_scales);
  EXPECT_TRUE(g.per_channel && g.f32_out && g.fp8_bits && g.pdl);
  EXPECT_EQ(g.rows * 10000 + g.out * 100 + g.in, 3 * 10000 + 40 * 100 + 64);
  EXPECT_EQ(g.variant, 2);
  const cuda::SkinnyGemm s = cuda::skinny_gemm_for(o, plan);
  EXPECT_EQ(s.x, o.x);
  EXPECT_EQ(s.w_scales, o.w_scales);
  EXPECT_TRUE(s.per_channel && s.f32_out);
  EXPECT_EQ(s.tiles_per_warp, 4);
  EXPECT_EQ(s.splits, 3);
  EXPECT_EQ(s.rows * 10000 + s.out * 100 + s.in, 3 * 10000 + 40 * 100 + 64);
}

}  // namespace
}  // namespace qed::testing
