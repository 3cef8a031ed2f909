#include "backend/cuda/decode_gemm_plan.h"

#include <cstring>
#include <string>

#include "backend/cuda/env_switch.h"

namespace qed::cuda {
namespace {

constexpr DecodeGemmPlan skinny(int tiles, int splits, bool persistent = false) {
  return {DecodeGemmKernel::Skinny, tiles, splits, persistent, 0, false};
}
constexpr DecodeGemmPlan gemv(int variant, bool fp8_bits = false) {
  return {DecodeGemmKernel::DecodeGemv, 0, 0, false, variant, fp8_bits};
}
constexpr DecodeGemmPlan cublaslt() {
  return {};
}

// Variant indices into kDecodeGemvVariants (decode_gemv.h), by name, for the table below.
constexpr int kW4F2U4 = 0, kW8F2U4 = 1, kW4F4U4 = 2, kW8F4U2 = 3, kW4F8U2 = 4, kW2F4U4 = 6;

// 1..4 rows (decode_gemv's range): the winner at 1, 2 and 3-4 rows of one layer shape of one format.
struct FewRowsEntry {
  SkinnyWeight type;
  int out, in;
  DecodeGemmPlan one, two, four;
};

// H200, 2026-12-02 06:50 (bench_skinny_gemm --rows 1,2,4 --skinny 0, without PDL): the fastest of decode_gemv's
// variants, cuBLASLt ("peer") and main's path per layer and row count; bench/skinny_gemm/README.md has the run.
// bf16: decode_gemv 0.4-10% over the old GEMV at 1-2 rows, cuBLASLt at 4. FP8: cuBLASLt within 4% of decode_gemv at
// 1 row on the narrow layers and ahead at 2-4 rows. int8: decode_gemv 1.2-1.5x the skinny kernel at 1-2 rows.
constexpr FewRowsEntry kFewRows[] = {
    {SkinnyWeight::Bf16, 7168, 5120, gemv(kW4F8U2), gemv(kW4F8U2), cublaslt()},      // qkv: 3844 / 3653 / 3349 GB/s
    {SkinnyWeight::Bf16, 5120, 5120, gemv(kW8F2U4), cublaslt(), cublaslt()},         // o_proj: 3598 / 3499 / 3492
    {SkinnyWeight::Bf16, 27648, 5120, gemv(kW4F8U2), gemv(kW8F4U2), cublaslt()},     // gate_up: 4447 / 4358 / 4281
    {SkinnyWeight::Bf16, 5120, 13824, gemv(kW8F4U2), gemv(kW8F4U2), cublaslt()},     // down: 4138 / 3951 / 3589
    {SkinnyWeight::Bf16, 152064, 5120, gemv(kW4F8U2), gemv(kW4F8U2), cublaslt()},    // lm_head: 4638 / 4590 / 4369
    {SkinnyWeight::Fp8E4m3, 7168, 5120, gemv(kW4F2U4), cublaslt(), cublaslt()},      // qkv: 3112 / 3027 / 3085
    {SkinnyWeight::Fp8E4m3, 5120, 5120, cublaslt(), cublaslt(), cublaslt()},         // o_proj: 2917 / 2927 / 2926
    {SkinnyWeight::Fp8E4m3, 27648, 5120, gemv(kW4F2U4), cublaslt(), cublaslt()},     // gate_up: 4155 / 4040 / 3602
    {SkinnyWeight::Fp8E4m3, 5120, 13824, gemv(kW8F4U2), cublaslt(), cublaslt()},     // down: 3540 / 3272 / 3258
    {SkinnyWeight::Int8, 7168, 5120, gemv(kW8F4U2), gemv(kW4F4U4), gemv(kW4F4U4)},   // qkv: 2762 / 2420 / 1834
    {SkinnyWeight::Int8, 5120, 5120, gemv(kW8F4U2), gemv(kW4F4U4), gemv(kW4F4U4)},   // o_proj: 2579 / 2197 / 1658
    {SkinnyWeight::Int8, 27648, 5120, gemv(kW2F4U4), gemv(kW4F8U2), gemv(kW2F4U4)},  // gate_up: 3785 / 3386 / 2385
    {SkinnyWeight::Int8, 5120, 13824, gemv(kW8F4U2), gemv(kW8F4U2), gemv(kW4F8U2)},  // down: 3438 / 2938 / 2303
};

// 5..16 rows: a measured winner for one layer shape of one format, `few` for 5..8 rows (one n8 activation tile),
// `many` for 9..16 (two).
struct Entry {
  SkinnyWeight type;
  int out, in;
  DecodeGemmPlan few, many;
};

// H200, 2026-12-02 03:38 (bench_skinny_gemm, gemv ee3cc94): int8 weight-only on the 14B layers, the fastest fixed
// variant per row range (its alternative, dequantize + cuBLASLt, is 9-13x slower at every row count). bf16 and FP8
// have no entries: cuBLASLt beat every skinny variant there at 1..16 rows (by 4-55%).
constexpr Entry kMeasured[] = {
    {SkinnyWeight::Int8, 7168, 5120, skinny(1, 1), skinny(1, 1)},   // qkv: 15.4 / 19.3 us
    {SkinnyWeight::Int8, 5120, 5120, skinny(1, 1), skinny(2, 2)},   // o_proj: 13.1 / 16.3 us
    {SkinnyWeight::Int8, 27648, 5120, skinny(4, 1), skinny(2, 1)},  // gate_up: 45.5 / 58.6 us
    {SkinnyWeight::Int8, 5120, 13824, skinny(2, 2), skinny(2, 2)},  // down: 29.2 / 33.1 us
};

enum class Override : uint8_t { Table, Cublaslt, Skinny, DecodeGemv };
struct Environment {
  Override mode = Override::Table;
  int variant = -1;  // DecodeGemv: -1 = the table's
  bool fp8_bits = false;
};

Environment parse_environment() {
  Environment e;
  const std::string s = env_string("QED_DECODE_GEMM");
  if (s.empty() || s == "table") return e;
  if (s == "cublaslt") {
    e.mode = Override::Cublaslt;
  } else if (s == "skinny") {
    e.mode = Override::Skinny;
  } else if (s.rfind("decode_gemv", 0) == 0) {
    e.mode = Override::DecodeGemv;
    size_t at = std::strlen("decode_gemv");
    while (at < s.size() && s[at] == ':') {
      const size_t end = s.find(':', at + 1);
      const std::string part = s.substr(at + 1, end == std::string::npos ? std::string::npos : end - at - 1);
      if (part == "bits") {
        e.fp8_bits = true;
      } else {
        e.variant = decode_gemv_variant_index(part.c_str());
      }
      at = end == std::string::npos ? s.size() : end;
    }
  }
  // Anything else (or an unknown variant name) is the table: an A/B switch must never take the backend down.
  return e;
}

const Environment& environment() {
  static const Environment e = parse_environment();
  return e;
}

DecodeGemmPlan table_plan(SkinnyWeight type, int rows, int out, int in) {
  if (rows <= kDecodeGemvMaxRows) {
    for (const FewRowsEntry& e : kFewRows) {
      if (e.type == type && e.out == out && e.in == in) return rows == 1 ? e.one : rows == 2 ? e.two : e.four;
    }
    // Shapes the table does not list: the narrow layers' variant, which has the most CTAs per feature.
    return gemv(kW4F2U4);
  }
  for (const Entry& e : kMeasured) {
    if (e.type == type && e.out == out && e.in == in) return rows <= 8 ? e.few : e.many;
  }
  return type == SkinnyWeight::Int8 ? skinny(0, 0) : cublaslt();
}

}  // namespace

int decode_gemv_variant_index(const char* name) {
  for (int v = 0; v < kDecodeGemvVariantCount; ++v) {
    if (decode_gemv_variant_name(v) == name) return v;
  }
  return -1;
}

DecodeGemmPlan decode_gemm_plan(SkinnyWeight type, int rows, int out, int in) {
  if (rows < 1 || rows > kSkinnyMaxRows) return {};
  const DecodeGemmPlan table = table_plan(type, rows, out, in);
  const Environment& env = environment();
  switch (env.mode) {
    case Override::Table:
      return table;
    case Override::Cublaslt:
      if (type != SkinnyWeight::Int8) return cublaslt();
      // int8 as main ran it before decode_gemv: the measured skinny variant from 1 row.
      for (const Entry& e : kMeasured) {
        if (e.type == type && e.out == out && e.in == in) return rows <= 8 ? e.few : e.many;
      }
      return skinny(0, 0);
    case Override::Skinny:
      for (const Entry& e : kMeasured) {
        if (e.type == type && e.out == out && e.in == in) return rows <= 8 ? e.few : e.many;
      }
      return skinny(2, 0, true);
    case Override::DecodeGemv: {
      if (rows > kDecodeGemvMaxRows) return table;
      DecodeGemmPlan plan = table.kernel == DecodeGemmKernel::DecodeGemv ? table : gemv(kW4F2U4);
      if (env.variant >= 0) plan.gemv_variant = env.variant;
      plan.fp8_bits = env.fp8_bits;
      return plan;
    }
  }
  return table;
}

SkinnyGemm skinny_gemm_for(const DecodeGemmOperands& o, const DecodeGemmPlan& plan) {
  SkinnyGemm g;
  static_cast<DecodeGemmOperands&>(g) = o;
  g.tiles_per_warp = plan.tiles_per_warp;
  g.splits = plan.splits;
  g.persistent = plan.persistent;
  return g;
}

DecodeGemv decode_gemv_for(const DecodeGemmOperands& o, const DecodeGemmPlan& plan, bool pdl) {
  DecodeGemv g;
  static_cast<DecodeGemmOperands&>(g) = o;
  g.variant = plan.gemv_variant;
  g.fp8_bits = plan.fp8_bits;
  g.pdl = pdl;
  return g;
}

}  // namespace qed::cuda
