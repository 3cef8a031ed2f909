#include "backend/cuda/decode_gemm_plan.h"

#include <cstdlib>
#include <cstring>

namespace qed::cuda {
namespace {

// A measured winner for one layer shape of one format: `few` for 1..8 rows (one n8 activation tile), `many` for
// 9..16 (two).
struct Entry {
  SkinnyWeight type;
  int out, in;
  DecodeGemmPlan few, many;
};

constexpr DecodeGemmPlan skinny(int tiles, int splits, bool persistent = false) {
  return {DecodeGemmKernel::Skinny, tiles, splits, persistent};
}

// H200, 2026-12-02 03:38 (bench_skinny_gemm, gemv ee3cc94): int8 weight-only on the 14B layers, the fastest fixed
// variant per row range (its alternative, dequantize + cuBLASLt, is 9-13x slower at every row count). bf16 and FP8
// have no entries: cuBLASLt beat every skinny variant there at 1..16 rows (by 4-55%).
constexpr Entry kMeasured[] = {
    {SkinnyWeight::Int8, 7168, 5120, skinny(1, 1), skinny(1, 1)},   // qkv: 15.4 / 19.3 us
    {SkinnyWeight::Int8, 5120, 5120, skinny(1, 1), skinny(2, 2)},   // o_proj: 13.1 / 16.3 us
    {SkinnyWeight::Int8, 27648, 5120, skinny(4, 1), skinny(2, 1)},  // gate_up: 45.5 / 58.6 us
    {SkinnyWeight::Int8, 5120, 13824, skinny(2, 2), skinny(2, 2)},  // down: 29.2 / 33.1 us
};

// QED_DECODE_GEMM=skinny sends every decode GEMM to the skinny kernel (the table's variant, else 2 tiles per warp,
// the best-or-near-best tiling of the 03:38 run, on a persistent grid with the launcher's split, which falls back to
// no split where the workspace is too small): the A/B switch for end-to-end runs of a kernel the table does not
// pick yet. Read once; the table is the default.
bool skinny_everywhere() {
  static const bool on = [] {
    const char* value = std::getenv("QED_DECODE_GEMM");
    return value != nullptr && std::strcmp(value, "skinny") == 0;
  }();
  return on;
}

}  // namespace

DecodeGemmPlan decode_gemm_plan(SkinnyWeight type, int rows, int out, int in) {
  if (rows < 1 || rows > kSkinnyMaxRows) return {};
  if (skinny_everywhere()) {
    for (const Entry& e : kMeasured) {
      if (e.type == type && e.out == out && e.in == in) return rows <= 8 ? e.few : e.many;
    }
    return skinny(2, 0, true);
  }
  for (const Entry& e : kMeasured) {
    if (e.type == type && e.out == out && e.in == in) return rows <= 8 ? e.few : e.many;
  }
  switch (type) {
    case SkinnyWeight::Bf16:
      // The CUDA-core GEMV won batch-1 decode end to end (8.7 ms a step vs 12.3 on the skinny kernel) and lost at 4
      // rows to cuBLASLt (10.9 ms vs 9.9 at 5); 2 rows sit on its side of the crossover (interpolated).
      return rows <= 2 ? DecodeGemmPlan{DecodeGemmKernel::Gemv} : DecodeGemmPlan{};
    case SkinnyWeight::Fp8E4m3:
      return {};
    case SkinnyWeight::Int8:
      return skinny(0, 0);
  }
  return {};
}

}  // namespace qed::cuda
