#pragma once
// The verify-step attention CTA on tensor cores (head_dim 64 and 128): one CTA per (sequence, KV head, KV partition)
// for ALL of the sequence's new rows. A speculative verify step sends every sequence T = 1 + drafts rows; the
// per-row CTA (attention_mma_tile.cuh) re-reads the sequence's whole K/V once per row, so a verify step streamed T
// times a decode step's K/V bytes. Here the T rows x the G query heads of the KV head are the M dimension of
// mma.sync.m16n8k16 (M row m = i x G + g: new row i, head g; T x G <= 64, so at most 4 m16 tiles), and every K/V
// byte of the partition is read once from global memory, for all of them.
//
// Work split inside the CTA: all 128 threads stream 32-key stages of K and V into shared memory (cp.async, two
// stages, rows padded by 16 bytes as MmaRing), and warp w computes m16 tile w over every key of the partition
// (warps past the tiles only load). The operand layouts are the per-row CTA's (see attention_mma_tile.cuh), with
// full 16-row A fragments: lane (r, c) holds rows r and r + 8 of its tile. No cross-warp merge: each warp owns its
// rows.
//
// Visibility is cpu::attention's: the cached prefix for every row; new key k for row i iff mask[i][k] (mask at
// seq_mask_offset), or causal k <= i. The partition size comes from the sequence's longest row (num_cached + n);
// a partition a row sees nothing of writes that row an empty partial (max -inf, sum 0), which the merge weighs 0,
// as the per-row kernel does for partitions past its keys. Partials and merge counters are indexed by the step's
// row (partials) and the sequence's first row (counters), so this launch and a per-row launch of the same step can
// share the buffers (they run one after the other).
//
// Included by attention_kernels.cu after its helpers (kThreads, kLog2e, row_partition_size, the MMA
// operand helpers, cp_async_16_shared and the wait), and by the CPU emulation test with emulated ones.
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/attention_merge.cuh"

namespace qed::cuda {
namespace {

constexpr int kVerifyTileKeys = 32;  // keys per shared-memory stage
constexpr int kVerifyMaxM = 64;      // T x G rows: 4 m16 tiles, one per warp

template <int HEAD_DIM, bool FP8>
struct VerifyStage {
  static constexpr int kRowBytes = HEAD_DIM * (FP8 ? 1 : 2);
  static constexpr int kPitch = kRowBytes + 16;
  static constexpr int kBytes = 2 * kVerifyTileKeys * kPitch;  // K rows, then V rows
  // The fused merge reuses the (then idle) stages: maxes and sums [M][partitions], row sums [M].
  static constexpr int kMergeBytes = (2 * kVerifyMaxM * kMaxFusedMergePartitions + kVerifyMaxM) * 4;
  static constexpr int kSharedBytes = 2 * kBytes > kMergeBytes ? 2 * kBytes : kMergeBytes;
};

struct VerifyParams {
  AttentionBatch batch;     // the step's sequence arrays (row_list and rows unused)
  const int32_t* seq_list;  // [grid.x]: the sequences this launch computes, all of their rows
  AttentionShape shape;
  const __nv_bfloat16* q;
  int q_stride;
  const void* k_cache;  // bf16 or E4M3 codes
  const void* v_cache;
  float k_dequant, v_dequant;  // as Params
  int partitions;
  float* partials;  // [step rows][num_heads][partitions][head_dim + 2]
  __nv_bfloat16* out;
  uint8_t* out_fp8;
  const float* out_fp8_scale;
  uint32_t* merge_counters;  // fused merge: one per (sequence's first row, KV head), zero between launches
  // > 0 (graph verify steps): rows n .. slot_rows - 1 after the sequence's first are padding rows; partition 0's
  // CTA writes zeros there for the KV head's query heads (finite values; nothing reads them).
  int slot_rows;
};

__device__ __forceinline__ float* verify_partial(const VerifyParams& p, int row, int head, int part) {
  const size_t step_head = size_t(row) * p.shape.num_heads + size_t(head);
  return p.partials + (step_head * p.partitions + part) * attention_partial_floats(p.shape.head_dim);
}

// The fused split-K merge of one (sequence, KV head): as merge_if_last, over the sequence's rows x heads.
__device__ void verify_merge_if_last(const VerifyParams& p, unsigned char* shared, int row0, int rows_m, int group,
                                     int head0) {
  __shared__ bool last;
  // In the (then idle) stages: maxes and sums [M][partitions], row sums [M].
  float* maxes = reinterpret_cast<float*>(shared);
  float* sums = maxes + kVerifyMaxM * kMaxFusedMergePartitions;
  float* row_sums = sums + kVerifyMaxM * kMaxFusedMergePartitions;
  __threadfence();
  __syncthreads();  // also: every warp is done with the stages
  if (threadIdx.x == 0) {
    uint32_t* counter = p.merge_counters + size_t(row0) * p.shape.num_kv_heads + blockIdx.y;
    last = atomicAdd(counter, 1u) == uint32_t(p.partitions - 1);
    if (last) *counter = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  merge_partials(
      kThreads, rows_m, p.partitions, p.shape.head_dim,
      [&](int m, int part) -> const float* { return verify_partial(p, row0 + m / group, head0 + m % group, part); },
      [&](int m) {
        return (size_t(row0 + m / group) * p.shape.num_heads + size_t(head0 + m % group)) * p.shape.head_dim;
      },
      maxes, sums, row_sums, p.out, p.out_fp8, p.out_fp8_scale);
}

template <int HEAD_DIM, bool FP8>
__global__ void __launch_bounds__(kThreads) attention_verify_kernel(VerifyParams p) {
  using Raw = std::conditional_t<FP8, uint2, uint4>;
  using Element = std::conditional_t<FP8, uint8_t, __nv_bfloat16>;
  using Stage = VerifyStage<HEAD_DIM, FP8>;
  static_assert(HEAD_DIM % 64 == 0, "V loads cover 64 dims per 8 lanes");
  static_assert(kThreads / 32 * 16 == kVerifyMaxM, "one m16 tile per warp");
  constexpr int kKLoads = HEAD_DIM / 32;
  constexpr int kVLoads = HEAD_DIM / 64;
  constexpr int kOutTiles = HEAD_DIM / 8;
  constexpr int kElement = FP8 ? 1 : 2;
  constexpr int kPieces = Stage::kRowBytes / 16;  // 16-byte cp.async pieces per K (or V) row
  __shared__ __align__(16) unsigned char shared[Stage::kSharedBytes];

  pdl_wait();
  pdl_trigger();
  const AttentionBatch& b = p.batch;
  const int seq = p.seq_list[blockIdx.x];
  const int kv_head = int(blockIdx.y);
  const int group = p.shape.num_heads / p.shape.num_kv_heads;
  const int head0 = kv_head * group;
  const int n = b.seq_num_new[seq];
  const int cached = b.seq_num_cached[seq];
  const int row0 = b.seq_q_start[seq];
  const int mask_offset = b.seq_mask_offset[seq];
  const uint8_t* mask = mask_offset >= 0 ? b.masks + mask_offset : nullptr;
  const int32_t* table = b.block_tables + b.seq_block_offset[seq];
  const int rows_m = n * group;
  const int kv_len = cached + n;  // what the sequence's longest-seeing row attends over
  const int part = int(blockIdx.z);
  const int psize = row_partition_size(kv_len, p.partitions);
  const int begin = part * psize;
  const int end = min(kv_len, begin + psize);
  const bool split = p.partitions > 1;
  if (part == 0 && p.slot_rows > n) {
    const int pad_items = (p.slot_rows - n) * group * HEAD_DIM;
    for (int item = int(threadIdx.x); item < pad_items; item += kThreads) {
      const int i = n + item / (group * HEAD_DIM), g = (item / HEAD_DIM) % group, d = item % HEAD_DIM;
      const size_t at = (size_t(row0 + i) * p.shape.num_heads + size_t(head0 + g)) * HEAD_DIM + size_t(d);
      p.out[at] = __float2bfloat16(0.0f);
      if (p.out_fp8) p.out_fp8[at] = 0;
    }
  }

  if (begin >= end) {
    if (split) {
      for (int m = int(threadIdx.x); m < rows_m; m += kThreads) {
        float* partial = verify_partial(p, row0 + m / group, head0 + m % group, part);
        partial[HEAD_DIM] = -INFINITY;
        partial[HEAD_DIM + 1] = 0.0f;
      }
    }
    if (p.merge_counters) verify_merge_if_last(p, shared, row0, rows_m, group, head0);
    return;
  }

  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int r = lane >> 2, c = lane & 3;
  const bool computes = warp * 16 < rows_m;  // uniform per warp
  const int block_size = p.shape.block_size;
  const size_t kv_dim = size_t(p.shape.num_kv_heads) * HEAD_DIM;
  const Element* k_head = static_cast<const Element*>(p.k_cache) + size_t(kv_head) * HEAD_DIM;
  const Element* v_head = static_cast<const Element*>(p.v_cache) + size_t(kv_head) * HEAD_DIM;
  const float scale_log2 = p.shape.scale * kLog2e * p.k_dequant;

  // This lane's M rows (h = 0: r, h = 1: r + 8 of the warp's tile): new row and head, or -1 past the sequence's.
  int qi[2], m_row[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    m_row[h] = warp * 16 + r + 8 * h;
    qi[h] = m_row[h] < rows_m ? m_row[h] / group : -1;
  }

  // Q as the A operand: k step 2j from words x, y of load j, step 2j + 1 from z, w; a0/a2 row r, a1/a3 row r + 8.
  uint32_t qa[2 * kKLoads][4];
#pragma unroll
  for (int j = 0; j < kKLoads; ++j) {
    uint4 w[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      w[h] = make_uint4(0, 0, 0, 0);
      if (computes && qi[h] >= 0) {
        const int row = row0 + qi[h], head = head0 + m_row[h] % group;
        w[h] =
            *reinterpret_cast<const uint4*>(p.q + size_t(row) * p.q_stride + size_t(head) * HEAD_DIM + 32 * j + 8 * c);
      }
      if constexpr (FP8) {
        w[h] = make_uint4(bf16x2_to_f16x2(w[h].x), bf16x2_to_f16x2(w[h].y), bf16x2_to_f16x2(w[h].z),
                          bf16x2_to_f16x2(w[h].w));
      }
    }
    qa[2 * j][0] = w[0].x;
    qa[2 * j][1] = w[1].x;
    qa[2 * j][2] = w[0].y;
    qa[2 * j][3] = w[1].y;
    qa[2 * j + 1][0] = w[0].z;
    qa[2 * j + 1][1] = w[1].z;
    qa[2 * j + 1][2] = w[0].w;
    qa[2 * j + 1][3] = w[1].w;
  }

  float o[kOutTiles][4];  // (row r: cols 2c, 2c + 1), (row r + 8: cols 2c, 2c + 1) of each output tile
#pragma unroll
  for (int i = 0; i < kOutTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // per row h, log2 units, the same in the quad
  float l_run[2] = {0.0f, 0.0f};            // this lane's share of row h's sum

  auto visible = [&](int h, int key) {
    if (key >= end || qi[h] < 0) return false;
    if (key < cached) return true;
    const int k = key - cached;
    return mask ? mask[qi[h] * n + k] != 0 : k <= qi[h];
  };

  // 16 keys from base out of a stage: scores, online softmax per row, P·V.
  auto consume = [&](int base, const Raw(&k_raw)[2][kKLoads], const Raw(&v_raw)[4][kVLoads]) {
    uint4 kr[2][kKLoads], vr[4][kVLoads];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
      for (int j = 0; j < kKLoads; ++j) kr[t][j] = operand_words(k_raw[t][j]);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
#pragma unroll
      for (int bb = 0; bb < kVLoads; ++bb) vr[u][bb] = operand_words(v_raw[u][bb]);
    }
    // s[t]: (row r, keys base + 8t + 2c + {0, 1}), (row r + 8, the same keys).
    float s[2][4];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      s[t][0] = s[t][1] = s[t][2] = s[t][3] = 0.0f;
#pragma unroll
      for (int j = 0; j < kKLoads; ++j) {
        mma_m16n8k16_f32<FP8>(s[t], qa[2 * j], kr[t][j].x, kr[t][j].y);
        mma_m16n8k16_f32<FP8>(s[t], qa[2 * j + 1], kr[t][j].z, kr[t][j].w);
      }
    }
    float pw[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float x[4];
      float chunk_max = -INFINITY;
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int key = base + 2 * c + (u & 1) + 8 * (u >> 1);
        x[u] = visible(h, key) ? s[u >> 1][2 * h + (u & 1)] * scale_log2 : -INFINITY;
        chunk_max = fmaxf(chunk_max, x[u]);
      }
      chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, 1));
      chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, 2));
      const float m_new = fmaxf(m_run[h], chunk_max);
      const float ref = m_new == -INFINITY ? 0.0f : m_new;
      const float correction = exp2f(m_run[h] - ref);
#pragma unroll
      for (int u = 0; u < 4; ++u) pw[h][u] = exp2f(x[u] - ref);
      l_run[h] = l_run[h] * correction + (pw[h][0] + pw[h][1]) + (pw[h][2] + pw[h][3]);
      m_run[h] = m_new;
#pragma unroll
      for (int i = 0; i < kOutTiles; ++i) {
        o[i][2 * h] *= correction;
        o[i][2 * h + 1] *= correction;
      }
    }
    // P as the A operand (keys 2c, 2c+1 | 2c+8, 2c+9; rows r | r + 8), split into hi + lo parts.
    uint32_t p_hi[4], p_lo[4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float lo[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) lo[u] = pw[h][u] - round_to_operand<FP8>(pw[h][u]);
      p_hi[h] = pack_operands<FP8>(pw[h][0], pw[h][1]);
      p_hi[2 + h] = pack_operands<FP8>(pw[h][2], pw[h][3]);
      p_lo[h] = pack_operands<FP8>(lo[0], lo[1]);
      p_lo[2 + h] = pack_operands<FP8>(lo[2], lo[3]);
    }
#pragma unroll
    for (int bb = 0; bb < kVLoads; ++bb) {
      const uint32_t w0[4] = {vr[0][bb].x, vr[0][bb].y, vr[0][bb].z, vr[0][bb].w};
      const uint32_t w1[4] = {vr[1][bb].x, vr[1][bb].y, vr[1][bb].z, vr[1][bb].w};
      const uint32_t w2[4] = {vr[2][bb].x, vr[2][bb].y, vr[2][bb].z, vr[2][bb].w};
      const uint32_t w3[4] = {vr[3][bb].x, vr[3][bb].y, vr[3][bb].z, vr[3][bb].w};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint32_t selector = (i & 1) ? 0x7632u : 0x5410u;
        const uint32_t b0 = __byte_perm(w0[i / 2], w1[i / 2], selector);
        const uint32_t b1 = __byte_perm(w2[i / 2], w3[i / 2], selector);
        mma_m16n8k16_f32<FP8>(o[8 * bb + i], p_hi, b0, b1);
        mma_m16n8k16_f32<FP8>(o[8 * bb + i], p_lo, b0, b1);
      }
    }
  };

  // Stage i (keys begin + 32i ..) by all threads; keys past the partition zero-filled (unwritten slots may hold
  // NaN bits). One commit group per stage, empty ones past the last keep wait_group's count uniform.
  const int stages = (end - begin + kVerifyTileKeys - 1) / kVerifyTileKeys;
  auto issue = [&](int i) {
    if (i < stages) {
      const int base = begin + i * kVerifyTileKeys;
      unsigned char* stage = shared + (i % 2) * Stage::kBytes;
      for (int piece = int(threadIdx.x); piece < kVerifyTileKeys * kPieces; piece += kThreads) {
        const int row = piece / kPieces, col = piece % kPieces;
        const int key = base + row;
        const bool valid = key < end;
        const size_t slot = valid ? size_t(table[key / block_size]) * block_size + size_t(key % block_size) : 0;
        const unsigned char* k_src = reinterpret_cast<const unsigned char*>(k_head + slot * kv_dim) + col * 16;
        const unsigned char* v_src = reinterpret_cast<const unsigned char*>(v_head + slot * kv_dim) + col * 16;
        cp_async_16_shared(stage + row * Stage::kPitch + col * 16, k_src, valid);
        cp_async_16_shared(stage + (kVerifyTileKeys + row) * Stage::kPitch + col * 16, v_src, valid);
      }
    }
    cp_async_commit();
  };
  issue(0);
#pragma unroll 1
  for (int i = 0; i < stages; ++i) {
    issue(i + 1);
    cp_async_wait_group<1>();  // this thread's pieces of stage i landed
    __syncthreads();           // ... and everyone's
    const unsigned char* stage = shared + (i % 2) * Stage::kBytes;
    if (computes) {
#pragma unroll 1
      for (int sub = 0; sub < kVerifyTileKeys / 16; ++sub) {
        const int base = begin + i * kVerifyTileKeys + 16 * sub;
        if (base >= end) break;
        Raw k_raw[2][kKLoads], v_raw[4][kVLoads];
#pragma unroll
        for (int t = 0; t < 2; ++t) {
#pragma unroll
          for (int j = 0; j < kKLoads; ++j) {
            k_raw[t][j] = *reinterpret_cast<const Raw*>(stage + (16 * sub + 8 * t + r) * Stage::kPitch +
                                                        (32 * j + 8 * c) * kElement);
          }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int row = kVerifyTileKeys + 16 * sub + 2 * c + (u & 1) + 8 * (u >> 1);
#pragma unroll
          for (int bb = 0; bb < kVLoads; ++bb) {
            v_raw[u][bb] = *reinterpret_cast<const Raw*>(stage + row * Stage::kPitch + (64 * bb + 8 * r) * kElement);
          }
        }
        consume(base, k_raw, v_raw);
      }
    }
    __syncthreads();  // everyone is done with stage i before issue(i + 2) refills it
  }
  cp_async_wait_group<0>();

  if (computes) {
    const float fp8_scale = p.out_fp8 ? *p.out_fp8_scale : 1.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = l_run[h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      if (qi[h] < 0) continue;
      const int row = row0 + qi[h], head = head0 + m_row[h] % group;
      float* partial = split ? verify_partial(p, row, head, part) : nullptr;
      if (split && c == 0) {
        partial[HEAD_DIM] = m_run[h];
        partial[HEAD_DIM + 1] = l;
      }
#pragma unroll
      for (int bb = 0; bb < kVLoads; ++bb) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int d = 64 * bb + 8 * (2 * c + e) + i;
            const float value = o[8 * bb + i][2 * h + e] * p.v_dequant;
            if (split) {
              partial[d] = value;
            } else {
              // No visible key at all: zeros, as cpu::attention.
              const size_t at = (size_t(row) * p.shape.num_heads + size_t(head)) * HEAD_DIM + size_t(d);
              const __nv_bfloat16 out = __float2bfloat16(l > 0.0f ? value / l : 0.0f);
              p.out[at] = out;
              if (p.out_fp8) p.out_fp8[at] = quantize_e4m3(__bfloat162float(out), fp8_scale);
            }
          }
        }
      }
    }
  }
  if (p.merge_counters) verify_merge_if_last(p, shared, row0, rows_m, group, head0);
}

}  // namespace
}  // namespace qed::cuda
