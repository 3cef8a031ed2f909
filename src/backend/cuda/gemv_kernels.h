#pragma once
// Skinny GEMMs for decode (1..kSkinnyMaxRows activation rows): y[r][j] = scale · Σ_k x[r][k] · W[j][k] (+ bias[j]),
// W row-major out × in (nn.Linear), fp32 accumulation, one pass over W at (near) HBM bandwidth. At these row counts
// a GEMM is a stream of the weight (2·rows FLOP per weight element); cuBLASLt's picks reached 3.0–4.0 of the H200's
// 4.8 TB/s at 12 rows and our earlier CUDA-core GEMV was slower than cuBLASLt at 4 rows (docs/cuda.md).
//
// One kernel family on the tensor cores (mma.sync m16n8k16, fp32 accumulation): the weight is the M = 16 side (bf16;
// int8 codes converted to bf16 in registers; E4M3 codes and E4M3 activations converted to f16, sm_89+: all exact),
// the activation rows the N = 8 side (one or two n8 tiles). Because a dot product does not care about the order of its
// k terms, each lane loads 16 contiguous bytes of a weight row and of an activation row and uses them as its fragment
// of the MMA's k range (the same permutation of k for both operands), so no shared memory or ldmatrix is needed: global
// → registers → MMA. The 8 warps of a CTA split K (interleaved groups of 16-byte steps) and reduce through shared
// memory.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace qed::cuda {

inline constexpr int kSkinnyMaxRows = 16;

// Int8 decode batches up to this many rows always run skinny_gemm (LinearRunner): their alternative dequantizes the
// weight to bf16 on every call (9-13x slower, measured). Which kernel other formats use: decode_gemm_plan.h.
inline constexpr int kSkinnyInt8Rows = kSkinnyMaxRows;

enum class SkinnyWeight : uint8_t {
  Bf16,     // x bf16, W bf16, no scales
  Fp8E4m3,  // x E4M3 codes, W E4M3 codes; scale = *x_scale · w_scales[per_channel ? j : 0] (W8A8, cpu::fp8_gemm)
  Int8,     // x bf16, W int8 codes; scale = w_scales[j] (weight-only, cpu::int8_wo_gemm)
};

// One decode GEMM's operands, whichever kernel runs it: skinny_gemm (SkinnyGemm), decode_gemv (decode_gemv.h) or
// cuBLASLt (decode_gemm_plan.h picks).
struct DecodeGemmOperands {
  const void* x = nullptr;  // rows × in (bf16, or E4M3 codes for Fp8E4m3), 16-byte aligned rows
  const void* w = nullptr;  // out × in, 16-byte aligned rows
  SkinnyWeight type = SkinnyWeight::Bf16;
  const float* x_scale = nullptr;   // device scalar (Fp8E4m3; null = 1)
  const float* w_scales = nullptr;  // device: 1 float (Fp8E4m3 per tensor) or `out` floats (per channel, Int8)
  bool per_channel = false;         // Fp8E4m3: w_scales has `out` entries
  const uint16_t* bias = nullptr;   // bf16 [out] or null
  void* y = nullptr;                // rows × out, bf16 or (f32_out) fp32
  bool f32_out = false;
  int rows = 0, out = 0, in = 0;
};

struct SkinnyGemm : DecodeGemmOperands {
  // m16 weight tiles per warp (1, 2 or 4; 0 = chosen from `out`): more tiles reuse each activation load for more
  // weight rows, fewer give more CTAs for narrow layers. The benchmark overrides it to measure the choice.
  int tiles_per_warp = 0;
  // Split-K over CTAs (1: none; 0: chosen from the shape, 1 without a workspace): more and smaller CTAs for layers
  // with few output features, so the tail of the launch keeps enough loads in flight. splits > 1 needs `workspace`
  // (skinny_gemm_workspace_bytes) and `counters` (one per CTA along out, zeroed once: every launch leaves them
  // zero); launches sharing them must be ordered (one stream).
  int splits = 0;
  float* workspace = nullptr;
  size_t workspace_bytes = 0;
  unsigned* counters = nullptr;
  int counter_count = 0;
  int multiprocessors = 132;  // of the device, for the default split and the persistent grid
  // Launch only as many CTAs as are resident at once, each looping over units (a column × a split): no partial last
  // wave, which cost the layers with a few hundred CTAs up to a third of their time (03:38 run).
  bool persistent = false;
};

// Whether skinny_gemm takes this shape: rows in [1, kSkinnyMaxRows], in a positive multiple of the 16-byte vector
// (8 bf16 elements, 16 for E4M3 and int8), out positive. FP8 also needs an sm_89+ device (checked by the caller).
bool skinny_gemm_supports(SkinnyWeight type, int rows, int in, int out);

// The tiles_per_warp the launcher uses for `out` output features when the caller leaves it 0.
int skinny_gemm_default_tiles(int out);
// The splits it uses when the caller leaves them 0 (and gives a large enough workspace).
int skinny_gemm_default_splits(SkinnyWeight type, int out, int in, int tiles_per_warp, int multiprocessors,
                               bool persistent);
// Workspace bytes of a launch with these (resolved, non-zero) tiles and splits.
size_t skinny_gemm_workspace_bytes(int rows, int out, int tiles_per_warp, int splits);

void skinny_gemm(const SkinnyGemm& g, cudaStream_t stream);

// The argument checks skinny_gemm and decode_gemv share: x and w 16-byte aligned (their vector loads), scales for
// the quantized formats. Throws qed::Error naming `kernel`.
void require_decode_gemm_operands(const DecodeGemmOperands& o, const char* kernel);

}  // namespace qed::cuda
