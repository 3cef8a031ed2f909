#pragma once
// The tensor-core prefill attention kernel itself (see prefill_attention_kernels.h), written against a handful of
// primitives the including file defines first, in qed::cuda's unnamed namespace: shared_address, cp_async_16,
// cp_async_commit, cp_async_wait_all, ldmatrix_x4, ldmatrix_x4_trans, mma_bf16, prefill_shared_memory, and for FP8
// caches load_e4m3x8_as_bf16x8 (8 codes → their 8 values as bf16, exact; read from shared memory here) and
// store_shared_16.
// prefill_attention_kernels.cu defines them as PTX; tests/backend_cuda/prefill_attention_emulation_test.cpp as host
// emulations of the PTX ISA's fragment layouts, so the CPU build runs this very code. Unnamed namespace: each
// includer gets its own copy, and the two never meet at link time.
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

namespace qed::cuda {
namespace {

// A CTA is WARPS warps; each warp owns SLICES m16 slices (16 query rows each) of the tile, so a tile is
// 16 × WARPS × SLICES rows. Two slices per warp reuse every K/V fragment read from shared memory for two MMAs
// (FlashAttention-2's 4 warps × 32 rows); one slice keeps the warp's Q fragments in registers instead.
constexpr int kTileN = 64;  // keys per KV tile
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory: the Q tile (ROWS rows), one K tile and one V tile, bf16, row-major [row][d]. Rows are padded by 16
// bytes so the eight 16-byte rows one ldmatrix phase reads fall into distinct bank groups (a row pitch of 16 mod
// 128 bytes).
template <int D, int ROWS>
struct SmemLayout {
  static constexpr int kPitch = D + 8;  // bf16 elements per row
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + ROWS * kPitch;
  static constexpr int kV = kK + kTileN * kPitch;
  static constexpr int kBytes = (kV + kTileN * kPitch) * 2;
  // FP8 caches: the K and V tiles' codes land here first (cp.async, [key][d] bytes), then become bf16 in kK / kV.
  static constexpr int kStageKByte = kBytes;
  static constexpr int kStageVByte = kStageKByte + kTileN * D;
  static constexpr int kBytesFp8 = kStageVByte + kTileN * D;
};

struct PrefillParams {
  const __nv_bfloat16* q;
  int q_stride;
  const __nv_bfloat16* k_cache;
  const __nv_bfloat16* v_cache;
  // An FP8 cache instead (both set, k_cache/v_cache unused): E4M3 codes, staged in shared memory by cp.async and
  // converted there to bf16 code values; k_scale is folded into scale_log2, v_scale into the output (v_dequant).
  // The launch must then provide SmemLayout::kBytesFp8.
  const uint8_t* k_codes = nullptr;
  const uint8_t* v_codes = nullptr;
  float v_dequant = 1.0f;
  const int32_t* seq_q_start;
  const int32_t* seq_num_new;
  const int32_t* seq_num_cached;
  const int32_t* seq_block_offset;
  const int32_t* block_tables;
  const int32_t* tiles;
  int num_heads;
  int group;   // query heads per KV head
  int kv_dim;  // num_kv_heads × head_dim: elements per cache slot
  int block_size;
  float scale_log2;  // softmax scale × log2(e): the kernel works in exp2
  __nv_bfloat16* out;
};

// Two floats as one bf16x2 register, `lo` in the low half (the lower column of an MMA fragment).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return bits;
}

// Keys ks .. ks + kTileN - 1 of one KV head into shared memory, each 16-byte chunk through the block table; keys at
// or past kv_end (not in the cache for this tile) are zero-filled so 0-weight products stay finite.
// With an FP8 cache (FP8, `codes`) the tile's codes go to the staging area `staging` instead (16-byte pieces, keys at
// or past kv_end zero), for convert_kv_tile once they landed.
template <int D, int THREADS, bool FP8>
__device__ __forceinline__ void load_kv_tile(uint32_t dst, uint32_t staging, const __nv_bfloat16* cache,
                                             const uint8_t* codes, const int32_t* table, const PrefillParams& p,
                                             int kv_head, int ks, int kv_end) {
  if constexpr (FP8) {
    constexpr int kPieces = D / 16;  // 16-byte pieces of a row of codes
    static_assert(kTileN * kPieces % THREADS == 0, "whole rounds of pieces");
#pragma unroll
    for (int i = 0; i < kTileN * kPieces / THREADS; ++i) {
      const int c = int(threadIdx.x) + i * THREADS;
      const int r = c / kPieces, col = c % kPieces;
      const int t = ks + r;
      const bool valid = t < kv_end;
      const uint8_t* src = codes;
      if (valid) {
        const size_t slot = size_t(table[t / p.block_size]) * p.block_size + size_t(t % p.block_size);
        src = codes + slot * p.kv_dim + size_t(kv_head) * D + col * 16;
      }
      cp_async_16(staging + uint32_t(r * D + col * 16), src, valid);
    }
    (void)dst;
    (void)cache;
    return;
  }
  (void)staging;
  (void)codes;
  constexpr int kChunks = D / 8;
  constexpr int kPitch = D + 8;
  static_assert(kTileN * kChunks % THREADS == 0, "whole rounds of chunks");
#pragma unroll
  for (int i = 0; i < kTileN * kChunks / THREADS; ++i) {
    const int c = int(threadIdx.x) + i * THREADS;
    const int r = c / kChunks, col = c % kChunks;
    const int t = ks + r;
    const bool valid = t < kv_end;
    const __nv_bfloat16* src = cache;
    if (valid) {
      const size_t slot = size_t(table[t / p.block_size]) * p.block_size + size_t(t % p.block_size);
      src = cache + slot * p.kv_dim + size_t(kv_head) * D + col * 8;
    }
    cp_async_16(dst + uint32_t((r * kPitch + col * 8) * 2), src, valid);
  }
}

// FP8: a staged tile of codes (landed, visible to every thread) → its bf16 values in the K or V tile (exact).
template <int D, int THREADS>
__device__ __forceinline__ void convert_kv_tile(uint32_t dst, const unsigned char* staging) {
  constexpr int kChunks = D / 8;
  constexpr int kPitch = D + 8;
#pragma unroll
  for (int i = 0; i < kTileN * kChunks / THREADS; ++i) {
    const int c = int(threadIdx.x) + i * THREADS;
    const int r = c / kChunks, col = c % kChunks;
    store_shared_16(dst + uint32_t((r * kPitch + col * 8) * 2),
                    load_e4m3x8_as_bf16x8(reinterpret_cast<const uint8_t*>(staging + r * D + col * 8), true));
  }
}

// FP8: the cache is E4M3 codes (p.k_codes / p.v_codes), staged and converted; a template parameter so the bf16
// instantiations carry none of it (their registers and spills stay as measured).
template <int D, int WARPS, int SLICES, bool FP8>
__global__ void __launch_bounds__(32 * WARPS) prefill_attention_kernel(PrefillParams p) {
  constexpr int kThreads = 32 * WARPS;
  constexpr int kTileM = 16 * WARPS * SLICES;
  using L = SmemLayout<D, kTileM>;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kSteps = D / 16;  // k-steps of Q·Kᵀ, and pairs of 8-wide d tiles of P·V
  constexpr int kKeyTiles = kTileN / 8;
  constexpr bool kQInRegisters = SLICES == 1;
  const __nv_bfloat16* smem = reinterpret_cast<const __nv_bfloat16*>(prefill_shared_memory());
  const uint32_t sq = shared_address(smem + L::kQ);
  const uint32_t sk = shared_address(smem + L::kK);
  const uint32_t sv = shared_address(smem + L::kV);
  constexpr bool fp8 = FP8;
  const unsigned char* stage_k = prefill_shared_memory() + L::kStageKByte;
  const unsigned char* stage_v = prefill_shared_memory() + L::kStageVByte;
  const uint32_t sstage_k = shared_address(stage_k);
  const uint32_t sstage_v = shared_address(stage_v);

  // Consecutive CTAs are the heads of one tile (heads of one KV head adjacent): they read the same K/V from L2.
  const int tile = int(blockIdx.x) / p.num_heads;
  const int head = int(blockIdx.x) % p.num_heads;
  const int seq = p.tiles[2 * tile];
  const int first = p.tiles[2 * tile + 1];
  const int n = p.seq_num_new[seq];
  const int cached = p.seq_num_cached[seq];
  const int q_row0 = p.seq_q_start[seq];
  const int32_t* table = p.block_tables + p.seq_block_offset[seq];
  const int kv_head = head / p.group;
  const int tile_rows = min(kTileM, n - first);
  const int kv_end = cached + first + tile_rows;  // one past the last key the tile's last row sees
  const int kv_tiles = (kv_end + kTileN - 1) / kTileN;

  const int warp = int(threadIdx.x) / 32;
  const int lane = int(threadIdx.x) % 32;
  const int quad = lane % 4;  // column pair within an MMA fragment
  // Slice ms of this warp is tile rows (warp × SLICES + ms) × 16 .. + 15; this thread holds its fragment rows
  // lane/4 and lane/4 + 8. row_lo[ms]: the first of them as a new-row index of the sequence.
  int row_lo[SLICES];
#pragma unroll
  for (int ms = 0; ms < SLICES; ++ms) row_lo[ms] = first + (warp * SLICES + ms) * 16 + lane / 4;

  // Q tile (rows past the chunk zero-filled) and the first K tile, one async group.
  static_assert(kTileM * kChunks % kThreads == 0, "whole rounds of chunks");
#pragma unroll
  for (int i = 0; i < kTileM * kChunks / kThreads; ++i) {
    const int c = int(threadIdx.x) + i * kThreads;
    const int r = c / kChunks, col = c % kChunks;
    const bool valid = r < tile_rows;
    const __nv_bfloat16* src = valid ? p.q + size_t(q_row0 + first + r) * p.q_stride + size_t(head) * D + col * 8 : p.q;
    cp_async_16(sq + uint32_t((r * L::kPitch + col * 8) * 2), src, valid);
  }
  load_kv_tile<D, kThreads, FP8>(sk, sstage_k, p.k_cache, p.k_codes, table, p, kv_head, 0, kv_end);
  cp_async_commit();

  // Address of lane's row in Q's ldmatrix for slice ms, k-step k.
  auto q_fragment_address = [&](int ms, int k) {
    return sq + uint32_t((((warp * SLICES + ms) * 16 + lane % 16) * L::kPitch + k * 16 + (lane / 16) * 8) * 2);
  };
  [[maybe_unused]] uint32_t qf[kQInRegisters ? kSteps : 1][4];
  float o[SLICES][2 * kSteps][4];
  float m[SLICES][2], l[SLICES][2];  // running max of the raw scores / this thread's share of the running sum
#pragma unroll
  for (int ms = 0; ms < SLICES; ++ms) {
#pragma unroll
    for (int j = 0; j < 2 * kSteps; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[ms][j][e] = 0.0f;
    }
    m[ms][0] = m[ms][1] = -INFINITY;
    l[ms][0] = l[ms][1] = 0.0f;
  }

  for (int kt = 0; kt < kv_tiles; ++kt) {
    const int ks = kt * kTileN;
    cp_async_wait_all();
    __syncthreads();  // K tile kt (and Q) landed for every thread; every warp is done reading V tile kt - 1
    if constexpr (fp8) convert_kv_tile<D, kThreads>(sk, stage_k);  // every warp finished K tile kt - 1 (barrier below)
    load_kv_tile<D, kThreads, FP8>(sv, sstage_v, p.v_cache, p.v_codes, table, p, kv_head, ks, kv_end);
    cp_async_commit();
    if constexpr (fp8) __syncthreads();  // the converted K tile, for every warp
    if constexpr (kQInRegisters) {
      if (kt == 0) {
#pragma unroll
        for (int k = 0; k < kSteps; ++k) ldmatrix_x4(qf[k], q_fragment_address(0, k));
      }
    }

    // S = Q·Kᵀ for the warp's slices × 64 keys: s[ms][j] is keys ks + 8j .. ks + 8j + 7.
    float s[SLICES][kKeyTiles][4];
#pragma unroll
    for (int ms = 0; ms < SLICES; ++ms) {
#pragma unroll
      for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[ms][j][e] = 0.0f;
      }
    }
#pragma unroll
    for (int k = 0; k < kSteps; ++k) {
      uint32_t qa[SLICES][4];
#pragma unroll
      for (int ms = 0; ms < SLICES; ++ms) {
        if constexpr (kQInRegisters) {
#pragma unroll
          for (int i = 0; i < 4; ++i) qa[ms][i] = qf[k][i];
        } else {
          ldmatrix_x4(qa[ms], q_fragment_address(ms, k));
        }
      }
#pragma unroll
      for (int j = 0; j < kKeyTiles; j += 2) {
        // Matrices: keys 8j.. × d 16k.., keys 8j.. × d 16k+8.., keys 8j+8.. × d 16k.., keys 8j+8.. × d 16k+8..
        uint32_t b[4];
        const int key = j * 8 + lane % 8 + (lane / 16) * 8;
        const int d = k * 16 + ((lane / 8) % 2) * 8;
        ldmatrix_x4(b, sk + uint32_t((key * L::kPitch + d) * 2));
#pragma unroll
        for (int ms = 0; ms < SLICES; ++ms) {
          mma_bf16(s[ms][j], qa[ms], b[0], b[1]);
          mma_bf16(s[ms][j + 1], qa[ms], b[2], b[3]);
        }
      }
    }

    // Causal mask, only on tiles reaching past the first row's last key (that includes every key ≥ kv_end).
    if (ks + kTileN - 1 > cached + first) {
#pragma unroll
      for (int ms = 0; ms < SLICES; ++ms) {
        const int last_key_lo = cached + row_lo[ms];  // the last key row_lo sees; row_lo + 8 sees 8 more
#pragma unroll
        for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = ks + j * 8 + 2 * quad + (e % 2);
            if (key > last_key_lo + (e / 2) * 8) s[ms][j][e] = -INFINITY;
          }
        }
      }
    }

    // Online softmax per row: new max over the 4 lanes sharing the row, rescale what came before, weights in exp2.
#pragma unroll
    for (int ms = 0; ms < SLICES; ++ms) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kKeyTiles; ++j) {
          tile_max = fmaxf(tile_max, fmaxf(s[ms][j][2 * r], s[ms][j][2 * r + 1]));
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float m_new = fmaxf(m[ms][r], tile_max);
        // A row with no visible key yet keeps m = -inf; subtracting 0 then keeps exp2(-inf) = 0 instead of NaN.
        const float base = m_new == -INFINITY ? 0.0f : m_new * p.scale_log2;
        const float correction = exp2f(m[ms][r] * p.scale_log2 - base);  // 0 while m was -inf
        m[ms][r] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
          for (int e = 2 * r; e < 2 * r + 2; ++e) {
            s[ms][j][e] = exp2f(s[ms][j][e] * p.scale_log2 - base);
            sum += s[ms][j][e];
          }
        }
        l[ms][r] = l[ms][r] * correction + sum;
#pragma unroll
        for (int j = 0; j < 2 * kSteps; ++j) {
          o[ms][j][2 * r] *= correction;
          o[ms][j][2 * r + 1] *= correction;
        }
      }
    }

    cp_async_wait_all();
    __syncthreads();  // V tile kt landed; every warp is done reading K tile kt
    if constexpr (fp8) convert_kv_tile<D, kThreads>(sv, stage_v);  // every warp finished V tile kt - 1 (first barrier)
    if (kt + 1 < kv_tiles) {
      load_kv_tile<D, kThreads, FP8>(sk, sstage_k, p.k_cache, p.k_codes, table, p, kv_head, ks + kTileN, kv_end);
      cp_async_commit();
    }
    if constexpr (fp8) __syncthreads();  // the converted V tile, for every warp

      // O += P·V: the S fragments of keys 16k .. 16k + 15 are the A fragment of k-step k (P rounded to bf16).
#pragma unroll
    for (int k = 0; k < kTileN / 16; ++k) {
      uint32_t a[SLICES][4];
#pragma unroll
      for (int ms = 0; ms < SLICES; ++ms) {
        a[ms][0] = pack_bf16x2(s[ms][2 * k][0], s[ms][2 * k][1]);
        a[ms][1] = pack_bf16x2(s[ms][2 * k][2], s[ms][2 * k][3]);
        a[ms][2] = pack_bf16x2(s[ms][2 * k + 1][0], s[ms][2 * k + 1][1]);
        a[ms][3] = pack_bf16x2(s[ms][2 * k + 1][2], s[ms][2 * k + 1][3]);
      }
#pragma unroll
      for (int j = 0; j < kSteps; ++j) {
        // Transposed matrices: keys 16k.. × d 16j.., keys 16k+8.. × d 16j.., keys 16k.. × d 16j+8.., keys 16k+8.. ×
        // d 16j+8..
        uint32_t b[4];
        const int key = k * 16 + lane % 8 + ((lane / 8) % 2) * 8;
        const int d = j * 16 + (lane / 16) * 8;
        ldmatrix_x4_trans(b, sv + uint32_t((key * L::kPitch + d) * 2));
#pragma unroll
        for (int ms = 0; ms < SLICES; ++ms) {
          mma_bf16(o[ms][2 * j], a[ms], b[0], b[1]);
          mma_bf16(o[ms][2 * j + 1], a[ms], b[2], b[3]);
        }
      }
    }
  }

  // Normalise (the row's full sum is spread over the 4 lanes of the quad) and store rows of the chunk as bf16.
#pragma unroll
  for (int ms = 0; ms < SLICES; ++ms) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float sum = l[ms][r];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum > 0.0f ? p.v_dequant / sum : 0.0f;
      const int row = row_lo[ms] + 8 * r;
      if (row >= n) continue;
      __nv_bfloat16* dst = p.out + (size_t(q_row0 + row) * p.num_heads + size_t(head)) * D + 2 * quad;
#pragma unroll
      for (int j = 0; j < 2 * kSteps; ++j) {
        *reinterpret_cast<__nv_bfloat162*>(dst + j * 8) =
            __floats2bfloat162_rn(o[ms][j][2 * r] * inv, o[ms][j][2 * r + 1] * inv);
      }
    }
  }
}

}  // namespace
}  // namespace qed::cuda
