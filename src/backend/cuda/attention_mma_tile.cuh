#pragma once
// The flash-decoding CTA on tensor cores for head_dim 64 and 128 (included by attention_kernels.cu after its
// Params, RowView and helpers, inside qed::cuda's unnamed namespace).
//
// Why tensor cores in a memory-bound kernel: the CUDA-core kernel spent its time on one 16-lane shuffle reduction
// and two expf per (key, query head) and reached 415 GB/s at 12 rows x 2400 keys on an H200. Here the up-to-8 query
// heads of one KV head are the M rows of mma.sync.m16n8k16 (rows 8-15 zero), so a warp turns 16 keys into scores
// with 2 x head_dim/16 MMAs and no shuffles, and the softmax is per (head, key) once, spread over a quad.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16): lane = 4r + c holds A (r, 2c..2c+1), (r+8, ..), (r, 2c+8..),
// (r+8, 2c+8..); B (k 2c..2c+1, n r), (k 2c+8.., n r); C (r, 2c..2c+1), (r+8, 2c..2c+1). A dot product is a sum,
// so head_dim may be permuted freely as long as Q and K agree: lane (r, c) loads 16 bytes of key r at dims
// 32j + 8c .. 32j + 8c + 7 and uses words 0-1 for one k16 step and words 2-3 for the next; Q is loaded the same
// way. For P·V the keys are the k dimension and head_dim the n dimension: lane (r, c) loads 16 bytes of keys
// 2c, 2c+1, 2c+8, 2c+9 at dims 64b + 8r .. 64b + 8r + 7 and pairs the same dim of two keys with a byte permute, so
// output tile (b, i) column r is dim 64b + 8r + i. Every K/V byte is loaded once, 16 bytes per lane, and P comes
// straight from the score accumulators (FlashAttention-2's register reuse).
//
// Precision: P is split into bf16 hi + lo parts (two MMAs), so P·V carries ~16 mantissa bits like the fp32
// reference instead of bf16's 8; the extra MMAs cost nothing next to the loads.
//
// FP8 cache (FP8 = true): the same dims per lane at half the bytes (8-byte loads); the codes become fp16 holding
// code × 2^-8 exactly (e4m3x4_to_f16x2_times_2m8) and the MMAs run in fp16 (Q rounded bf16 → fp16 is exact in
// fp16's normal range, P hi + lo in fp16); k_scale × 2^8 is folded into the softmax scale and v_scale × 2^8 into
// the output, so the result is attention over code × scale, the CPU reference's dequantized cache.
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/pdl.cuh"

namespace qed::cuda {
namespace {

// Shared-memory ring of the pipelined variant: per warp kStages chunks of 16 K rows then 16 V rows, rows padded by 16
// bytes (the V fragment reads of a quarter warp then fall into distinct banks).
template <int HEAD_DIM, bool FP8>
struct MmaRing {
  static constexpr int kStages = 3;
  static constexpr int kRowBytes = HEAD_DIM * (FP8 ? 1 : 2);
  static constexpr int kPitch = kRowBytes + 16;
  static constexpr int kStageBytes = 2 * 16 * kPitch;
  static constexpr int kBytes = (kThreads / 32) * kStages * kStageBytes;  // 104,448 at bf16 / 128: 2 CTAs per SM
};

// PIPELINED: each warp streams its chunks global → shared memory with cp.async, kStages - 1 chunks ahead of the
// one it computes on (16 KiB in flight per warp at bf16 / 128 instead of the 8 KiB its registers hold), the block
// table looked up as far ahead. Measured without it (H200, rows 12 x 2400 keys): 1.7-1.9 TB/s, each warp waiting a
// block-table and a K/V round trip per chunk.
// BATCHED_MERGE: merge_if_last's batched tail (few-row launches).
template <int HEAD_DIM, bool FP8, bool PIPELINED, bool BATCHED_MERGE = false>
__global__ void __launch_bounds__(kThreads) attention_mma_kernel(Params p) {
  using Raw = std::conditional_t<FP8, uint2, uint4>;  // one lane's 8 elements of a K or V row, as stored
  static_assert(HEAD_DIM % 64 == 0, "V loads cover 64 dims per 8 lanes");
  constexpr int kWarps = kThreads / 32;
  constexpr int kChunk = 16;               // keys per warp step: two n8 score tiles = one k16 step of P·V
  constexpr int kKLoads = HEAD_DIM / 32;   // 16-byte loads per K row per lane
  constexpr int kVLoads = HEAD_DIM / 64;   // 16-byte loads per V row per lane
  constexpr int kOutTiles = HEAD_DIM / 8;  // n8 tiles of the output
  __shared__ float shared_m[kWarps][kMaxGroup];
  __shared__ float shared_l[kWarps][kMaxGroup];
  // The pipelined variant merges its warps through the (then idle) ring instead: 2 CTAs per SM need the room.
  __shared__ float shared_o_static[PIPELINED ? 1 : kWarps][kMaxGroup][HEAD_DIM];
  using Ring = MmaRing<HEAD_DIM, FP8>;
  extern __shared__ __align__(16) unsigned char ring[];
  auto shared_o = [&](int w, int g, int d) -> float& {
    if constexpr (PIPELINED) {
      return reinterpret_cast<float*>(ring)[(w * kMaxGroup + g) * HEAD_DIM + d];
    } else {
      return shared_o_static[w][g][d];
    }
  };

  // q, the caches and the step's metadata may all come from the kernels before; every CTA waits, empty ones too.
  pdl_wait();
  pdl_trigger();
  const RowView v = row_view(p);
  const int part = int(blockIdx.z);
  const int psize = row_partition_size(v.kv_len, p.partitions);
  const int begin = part * psize;
  const int end = min(v.kv_len, begin + psize);
  if (begin >= end) {
    write_empty_partials(p, v, part);
    if (p.merge_counters) merge_if_last<BATCHED_MERGE>(p, v);  // an empty partition counts too
    return;
  }

  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int r = lane >> 2, c = lane & 3;
  const int block_size = p.shape.block_size;
  const size_t kv_dim = size_t(p.shape.num_kv_heads) * HEAD_DIM;
  using Element = std::conditional_t<FP8, uint8_t, __nv_bfloat16>;
  const Element* k_head = static_cast<const Element*>(p.k_cache) + size_t(v.kv_head) * HEAD_DIM;
  const Element* v_head = static_cast<const Element*>(p.v_cache) + size_t(v.kv_head) * HEAD_DIM;
  const float scale_log2 = p.shape.scale * kLog2e * p.k_dequant;

  // Q as the A operand: words 2h, 2h+1 of load j are k step 2j + h (rows 8-15 and heads past the group: zero).
  uint32_t qa[2 * kKLoads][2];
#pragma unroll
  for (int j = 0; j < kKLoads; ++j) {
    uint4 w = make_uint4(0, 0, 0, 0);
    if (r < v.heads_here) {
      w = *reinterpret_cast<const uint4*>(p.q + size_t(v.row) * p.q_stride + size_t(v.head0 + r) * HEAD_DIM + 32 * j +
                                          8 * c);
    }
    if constexpr (FP8)
      w = make_uint4(bf16x2_to_f16x2(w.x), bf16x2_to_f16x2(w.y), bf16x2_to_f16x2(w.z), bf16x2_to_f16x2(w.w));
    qa[2 * j][0] = w.x;
    qa[2 * j][1] = w.y;
    qa[2 * j + 1][0] = w.z;
    qa[2 * j + 1][1] = w.w;
  }

  float o[kOutTiles][2];  // (head r, dims of columns 2c and 2c + 1) of each output tile
#pragma unroll
  for (int i = 0; i < kOutTiles; ++i) o[i][0] = o[i][1] = 0.0f;
  float m_run = -INFINITY;  // head r's running max (log2 units), the same in the 4 lanes of a quad
  float l_run = 0.0f;       // this lane's share of head r's running sum

  const bool aligned_chunks = block_size % kChunk == 0;  // a chunk (16-aligned start) sits in one block
  auto slot_of = [&](int t, int base, int chunk_slot0) {
    return aligned_chunks ? chunk_slot0 + (t - base) : v.table[t / block_size] * block_size + t % block_size;
  };
  auto chunk_slot0_of = [&](int base) {
    return aligned_chunks ? v.table[base / block_size] * block_size + base % block_size : 0;
  };

  // One chunk of 16 keys from base: scores, online softmax, P·V, from the lane's K/V words (as stored).
  auto consume = [&](int base, const Raw(&k_raw)[2][kKLoads], const Raw(&v_raw)[4][kVLoads]) {
    // As MMA operand words (bf16x2, or fp16x2 of code × 2^-8).
    uint4 kr[2][kKLoads], vr[4][kVLoads];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
      for (int j = 0; j < kKLoads; ++j) kr[t][j] = operand_words(k_raw[t][j]);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
#pragma unroll
      for (int b = 0; b < kVLoads; ++b) vr[u][b] = operand_words(v_raw[u][b]);
    }

    // S = Q·Kᵀ: s[t] holds (head r, keys base + 8t + 2c + {0, 1}).
    float s[2][2];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      s[t][0] = s[t][1] = 0.0f;
#pragma unroll
      for (int j = 0; j < kKLoads; ++j) {
        mma_rows0to7<FP8>(s[t], qa[2 * j][0], qa[2 * j][1], kr[t][j].x, kr[t][j].y);
        mma_rows0to7<FP8>(s[t], qa[2 * j + 1][0], qa[2 * j + 1][1], kr[t][j].z, kr[t][j].w);
      }
    }

    // Online softmax over the chunk (exp2 of log2-scaled scores); masked and out-of-range keys weigh 0.
    float x[4];
    float chunk_max = -INFINITY;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int key = base + 2 * c + (u & 1) + 8 * (u >> 1);
      const bool visible = key < end && (key < v.cached || v.mask == nullptr || v.mask[key - v.cached] != 0);
      x[u] = visible ? s[u >> 1][u & 1] * scale_log2 : -INFINITY;
      chunk_max = fmaxf(chunk_max, x[u]);
    }
    chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, 1));
    chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, 2));
    const float m_new = fmaxf(m_run, chunk_max);
    const float ref = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: keep exp2 away from -inf - -inf
    const float correction = exp2f(m_run - ref);
    float pw[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) pw[u] = exp2f(x[u] - ref);
    l_run = l_run * correction + (pw[0] + pw[1]) + (pw[2] + pw[3]);
    m_run = m_new;
#pragma unroll
    for (int i = 0; i < kOutTiles; ++i) {
      o[i][0] *= correction;
      o[i][1] *= correction;
    }

    // P as the A operand (k = keys 2c, 2c+1 | 2c+8, 2c+9), split into bf16 hi + lo.
    float lo[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) lo[u] = pw[u] - round_to_operand<FP8>(pw[u]);
    const uint32_t p_hi0 = pack_operands<FP8>(pw[0], pw[1]), p_hi2 = pack_operands<FP8>(pw[2], pw[3]);
    const uint32_t p_lo0 = pack_operands<FP8>(lo[0], lo[1]), p_lo2 = pack_operands<FP8>(lo[2], lo[3]);
#pragma unroll
    for (int b = 0; b < kVLoads; ++b) {
      const uint32_t w0[4] = {vr[0][b].x, vr[0][b].y, vr[0][b].z, vr[0][b].w};
      const uint32_t w1[4] = {vr[1][b].x, vr[1][b].y, vr[1][b].z, vr[1][b].w};
      const uint32_t w2[4] = {vr[2][b].x, vr[2][b].y, vr[2][b].z, vr[2][b].w};
      const uint32_t w3[4] = {vr[3][b].x, vr[3][b].y, vr[3][b].z, vr[3][b].w};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        // Dim 64b + 8r + i of keys (2c, 2c+1) and (2c+8, 2c+9): low half = the lower key.
        const uint32_t selector = (i & 1) ? 0x7632u : 0x5410u;
        const uint32_t b0 = __byte_perm(w0[i / 2], w1[i / 2], selector);
        const uint32_t b1 = __byte_perm(w2[i / 2], w3[i / 2], selector);
        mma_rows0to7<FP8>(o[8 * b + i], p_hi0, p_hi2, b0, b1);
        mma_rows0to7<FP8>(o[8 * b + i], p_lo0, p_lo2, b0, b1);
      }
    }
  };

  // Lane (r, c)'s words of a chunk: K rows 8t + r at dims 32j + 8c (8 elements each), V rows 2c + (u & 1) +
  // 8(u >> 1) at dims 64b + 8r.
  const int first_base = begin + warp * kChunk;
  if constexpr (!PIPELINED) {
    // The next chunk's block-table entry is read one iteration ahead: its round trip then overlaps this chunk's
    // loads and math instead of preceding the next chunk's loads.
    int chunk_slot0 = first_base < end ? chunk_slot0_of(first_base) : 0;
#pragma unroll 1
    for (int base = first_base; base < end; base += kWarps * kChunk) {
      const int next_base = base + kWarps * kChunk;
      const int next_slot0 = next_base < end ? chunk_slot0_of(next_base) : 0;
      // All loads of the chunk first (8 KiB per warp at head_dim 128 in flight), keys past the partition zero
      // (their slots may be unwritten: garbage times a zero weight could be NaN).
      Raw k_raw[2][kKLoads], v_raw[4][kVLoads];
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const int key = base + 8 * t + r;
        const Element* src = key < end ? k_head + size_t(slot_of(key, base, chunk_slot0)) * kv_dim : nullptr;
#pragma unroll
        for (int j = 0; j < kKLoads; ++j) {
          k_raw[t][j] = src ? *reinterpret_cast<const Raw*>(src + 32 * j + 8 * c) : Raw{};
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int key = base + 2 * c + (u & 1) + 8 * (u >> 1);
        const Element* src = key < end ? v_head + size_t(slot_of(key, base, chunk_slot0)) * kv_dim : nullptr;
#pragma unroll
        for (int b = 0; b < kVLoads; ++b) {
          v_raw[u][b] = src ? *reinterpret_cast<const Raw*>(src + 64 * b + 8 * r) : Raw{};
        }
      }
      consume(base, k_raw, v_raw);
      chunk_slot0 = next_slot0;
    }
  } else {
    constexpr int kPieces = Ring::kRowBytes / 16;  // 16-byte cp.async pieces per K (or V) row
    static_assert(kChunk * kPieces % 32 == 0, "whole rounds of pieces per lane");
    unsigned char* warp_ring = ring + warp * Ring::kStages * Ring::kStageBytes;
    const int step = kWarps * kChunk;
    const int chunks = first_base < end ? (end - first_base + step - 1) / step : 0;
    // Chunk i into stage i % kStages (rows past the partition zero-filled); one commit group per chunk, empty
    // groups past the last chunk keep wait_group's count uniform.
    auto issue = [&](int i) {
      if (i < chunks) {
        const int base = first_base + i * step;
        const int chunk_slot0 = chunk_slot0_of(base);
        unsigned char* stage = warp_ring + (i % Ring::kStages) * Ring::kStageBytes;
#pragma unroll
        for (int q = lane; q < kChunk * kPieces; q += 32) {
          const int row = q / kPieces, col = q % kPieces;
          const int key = base + row;
          const bool valid = key < end;
          const size_t slot = valid ? size_t(slot_of(key, base, chunk_slot0)) : 0;
          const unsigned char* k_src = reinterpret_cast<const unsigned char*>(k_head + slot * kv_dim) + col * 16;
          const unsigned char* v_src = reinterpret_cast<const unsigned char*>(v_head + slot * kv_dim) + col * 16;
          cp_async_16(shared_address(stage + row * Ring::kPitch + col * 16), k_src, valid);
          cp_async_16(shared_address(stage + (kChunk + row) * Ring::kPitch + col * 16), v_src, valid);
        }
      }
      cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < Ring::kStages - 1; ++i) issue(i);
#pragma unroll 1
    for (int i = 0; i < chunks; ++i) {
      issue(i + Ring::kStages - 1);
      cp_async_wait_group<Ring::kStages - 1>();  // this lane's pieces of chunk i landed
      __syncwarp();                              // ... and every other lane's
      const unsigned char* stage = warp_ring + (i % Ring::kStages) * Ring::kStageBytes;
      constexpr int kElement = FP8 ? 1 : 2;
      Raw k_raw[2][kKLoads], v_raw[4][kVLoads];
#pragma unroll
      for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int j = 0; j < kKLoads; ++j) {
          k_raw[t][j] = *reinterpret_cast<const Raw*>(stage + (8 * t + r) * Ring::kPitch + (32 * j + 8 * c) * kElement);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int row = kChunk + 2 * c + (u & 1) + 8 * (u >> 1);
#pragma unroll
        for (int b = 0; b < kVLoads; ++b) {
          v_raw[u][b] = *reinterpret_cast<const Raw*>(stage + row * Ring::kPitch + (64 * b + 8 * r) * kElement);
        }
      }
      consume(first_base + i * step, k_raw, v_raw);
      __syncwarp();  // every lane is done with this stage before a later issue() refills it
    }
    cp_async_wait_group<0>();
    __syncthreads();  // every warp is done with the ring: the merge below reuses it
  }

  l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
  l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
  if (r < v.heads_here) {
#pragma unroll
    for (int b = 0; b < kVLoads; ++b) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        shared_o(warp, r, 64 * b + 8 * (2 * c) + i) = o[8 * b + i][0];
        shared_o(warp, r, 64 * b + 8 * (2 * c + 1) + i) = o[8 * b + i][1];
      }
    }
    if (c == 0) {
      shared_m[warp][r] = m_run;
      shared_l[warp][r] = l_run;
    }
  }
  __syncthreads();

  // The warps' partial results, merged in a fixed order (deterministic run to run).
  for (int item = int(threadIdx.x); item < v.heads_here * HEAD_DIM; item += kThreads) {
    const int g = item / HEAD_DIM, d = item % HEAD_DIM;
    float merged = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) merged = fmaxf(merged, shared_m[w][g]);
    float sum = 0.0f, value = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float weight = merge_weight(shared_m[w][g], merged);
      sum += shared_l[w][g] * weight;
      value += shared_o(w, g, d) * weight;
    }
    write_result(p, v, part, g, d, merged, sum, value * p.v_dequant);
  }
  if (p.merge_counters) merge_if_last<BATCHED_MERGE>(p, v);
}

}  // namespace
}  // namespace qed::cuda
