#include <cstdint>
#include <cstdio>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/decode_gemv.cuh"

namespace qed::cuda {

std::string decode_gemv_variant_name(int variant) {
  if (variant < 0 || variant >= kDecodeGemvVariantCount) return "invalid";
  const DecodeGemvVariant& v = kDecodeGemvVariants[variant];
  char name[32];  // snprintf: gcc 12's -Wrestrict misfires on chained std::string operator+
  std::snprintf(name, sizeof(name), "w%df%du%d%s", v.warps, v.features, v.unroll, v.prefetch ? "p" : "");
  return name;
}

bool decode_gemv_supports(SkinnyWeight type, int rows, int in, int out) {
  const int elems = type == SkinnyWeight::Bf16 ? 8 : 16;
  return rows >= 1 && rows <= kDecodeGemvMaxRows && out > 0 && in > 0 && in % elems == 0;
}

bool decode_gemv_silu_supports(int variant, int out) {
  return variant >= 0 && variant < kDecodeGemvVariantCount && kDecodeGemvVariants[variant].features % 2 == 0 &&
         out > 0 && out % 2 == 0;
}

void decode_gemv(const DecodeGemv& g, cudaStream_t stream) {
  QED_KERNEL_REQUIRE(decode_gemv_supports(g.type, g.rows, g.in, g.out),
                     "decode_gemv: rows must be 1..4, out positive and in a positive multiple of one 16-byte vector");
  require_decode_gemm_operands(g, "decode_gemv");
  QED_KERNEL_REQUIRE(g.variant >= 0 && g.variant < kDecodeGemvVariantCount, "decode_gemv: unknown variant");
  QED_KERNEL_REQUIRE(g.y != nullptr, "decode_gemv: no output");
  if (g.silu_mul) {
    QED_KERNEL_REQUIRE(decode_gemv_silu_supports(g.variant, g.out),
                       "decode_gemv: SiLU-and-mul needs an even out and a variant with even features per CTA");
    QED_KERNEL_REQUIRE(!g.f32_out, "decode_gemv: SiLU-and-mul writes bf16");
    QED_KERNEL_REQUIRE(!g.y_fp8 || g.y_fp8_scale, "decode_gemv: an E4M3 output needs its scale");
  } else {
    QED_KERNEL_REQUIRE(!g.y_fp8, "decode_gemv: an E4M3 output only with SiLU-and-mul");
  }
  switch (g.type) {
    case SkinnyWeight::Bf16:
      gemv_detail::launch_bf16(g, stream);
      break;
    case SkinnyWeight::Fp8E4m3:
      if (g.fp8_bits) {
        gemv_detail::launch_fp8_bits(g, stream);
      } else {
        gemv_detail::launch_fp8_cvt(g, stream);
      }
      break;
    case SkinnyWeight::Int8:
      gemv_detail::launch_int8(g, stream);
      break;
  }
}

}  // namespace qed::cuda
