// The tensor-core prefill attention kernel (prefill_attention_tile.cuh) run on the CPU: every CUDA thread of a CTA
// is a std::thread, __syncthreads and the warp collectives (ldmatrix, mma.sync, shuffles) meet at barriers, and
// ldmatrix/mma follow the PTX ISA's fragment layouts for m8n8 .b16 matrices and mma.m16n8k16 .bf16 (rows/columns
// per lane: groupID = lane / 4, threadID_in_group = lane % 4). cp.async is a plain copy (the real pipeline's
// ordering is only exercised on a GPU: PrefillAttentionKernel.* in test_cuda_kernels). So CI, which has no GPU,
// still checks the kernel's index math, masks, tiling, online softmax and bounds (shared-memory accesses are
// range- and alignment-checked) against cpu::attention, with the GPU test's tolerance (see
// prefill_attention_test.cpp). Unwritten shared memory is filled with NaN bits before every CTA.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "core/dtype.h"

// ---- The emulated CUDA environment the kernel body is compiled against. ----
#include "emulated_cuda.h"

namespace qed::testing::emulation {

using emulated::lane_of_thread;
using emulated::warp_barrier;
using emulated::warp_of_thread;

// The CTA's state beyond emulated::CtaSync: the warp collectives' lane slots and the dynamic shared memory.
struct Cta {
  uint32_t address[8][32] = {};
  alignas(128) unsigned char shared[96 * 1024] = {};
  size_t shared_bytes = 0;  // the launch's dynamic shared memory: accesses past it fail the test
};
inline Cta* cta = nullptr;

[[noreturn]] inline void fail_access(const char* what, size_t at) {
  std::fprintf(stderr, "emulated kernel: %s at shared byte %zu\n", what, at);
  std::abort();
}

inline uint16_t shared_u16(uint32_t at) {
  if (at % 2 != 0 || at + 2 > cta->shared_bytes) fail_access("bad 2-byte read", at);
  uint16_t v;
  std::memcpy(&v, cta->shared + at, 2);
  return v;
}

inline float bf16_half(uint32_t reg, int high) {
  return bf16_to_float(uint16_t(high ? reg >> 16 : reg & 0xFFFFu));
}

}  // namespace qed::testing::emulation

namespace qed::cuda {
namespace {

using std::min;

unsigned char* prefill_shared_memory() {
  return testing::emulation::cta->shared;
}

uint32_t shared_address(const void* p) {
  const auto* byte = static_cast<const unsigned char*>(p);
  return uint32_t(byte - testing::emulation::cta->shared);
}

void cp_async_16(uint32_t dst, const void* src, bool valid) {
  using namespace testing::emulation;
  if (dst % 16 != 0 || dst + 16 > cta->shared_bytes) fail_access("bad cp.async destination", dst);
  if (valid) {
    std::memcpy(cta->shared + dst, src, 16);
  } else {
    std::memset(cta->shared + dst, 0, 16);
  }
}

void cp_async_commit() {}
void cp_async_wait_all() {}

// FP8 caches: 8 codes → their bf16 values (exact: E4M3 ⊂ bf16), through the CPU's decoder.
uint4 load_e4m3x8_as_bf16x8(const uint8_t* src, bool valid) {
  uint16_t values[8] = {};
  for (int i = 0; valid && i < 8; ++i) values[i] = float_to_bf16(f8e4m3_to_float(src[i]));
  uint4 out;
  std::memcpy(&out, values, sizeof(out));
  return out;
}

void store_shared_16(uint32_t dst, uint4 value) {
  using namespace testing::emulation;
  if (dst % 16 != 0 || dst + 16 > cta->shared_bytes) fail_access("bad 16-byte store", dst);
  std::memcpy(cta->shared + dst, &value, 16);
}

// Matrix i's row r comes from lane 8i + r's address; lane t receives row t/4, columns 2(t%4), 2(t%4)+1 of each
// matrix, or with trans the elements (2(t%4), t/4) and (2(t%4)+1, t/4).
void ldmatrix(uint32_t (&r)[4], uint32_t address, bool trans) {
  using namespace testing::emulation;
  const int w = warp_of_thread(), l = lane_of_thread();
  if (address % 16 != 0) fail_access("misaligned ldmatrix row", address);
  cta->address[w][l] = address;
  warp_barrier();
  const int g = l / 4, c = l % 4;
  for (int i = 0; i < 4; ++i) {
    const uint16_t lo =
        trans ? shared_u16(cta->address[w][8 * i + 2 * c] + 2 * g) : shared_u16(cta->address[w][8 * i + g] + 4 * c);
    const uint16_t hi = trans ? shared_u16(cta->address[w][8 * i + 2 * c + 1] + 2 * g)
                              : shared_u16(cta->address[w][8 * i + g] + 4 * c + 2);
    r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  warp_barrier();
}

void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
  ldmatrix(r, address, false);
}
void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  ldmatrix(r, address, true);
}

void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  testing::emulated::mma_m16n8k16(d, a, b0, b1,
                                  [](uint32_t reg, int h) { return testing::emulation::bf16_half(reg, h); });
}

}  // namespace
}  // namespace qed::cuda

#include "backend/cuda/prefill_attention_tile.cuh"

#undef threadIdx
#undef blockIdx
#undef gridDim
#undef __shared__

namespace qed::testing {
namespace {

// Every CTA of the launch, one after another, each as 32 × WARPS threads.
template <int D, int WARPS, int SLICES>
void emulate_launch(const cuda::PrefillParams& p, int num_tiles) {
  auto state = std::make_unique<emulation::Cta>();
  emulation::cta = state.get();
  state->shared_bytes = size_t(p.k_codes != nullptr ? cuda::SmemLayout<D, 16 * WARPS * SLICES>::kBytesFp8
                                                    : cuda::SmemLayout<D, 16 * WARPS * SLICES>::kBytes);
  ASSERT_LE(state->shared_bytes, sizeof(state->shared));
  for (int block = 0; block < num_tiles * p.num_heads; ++block) {
    std::memset(state->shared, 0xFF, sizeof(state->shared));  // bf16 NaNs
    emulated::run_cta({unsigned(block), 0, 0}, 32 * WARPS, [&p] {
      if (p.k_codes != nullptr) {
        cuda::prefill_attention_kernel<D, WARPS, SLICES, true>(p);
      } else {
        cuda::prefill_attention_kernel<D, WARPS, SLICES, false>(p);
      }
    });
  }
  emulation::cta = nullptr;
}

struct Seq {
  int num_cached, n;
};

struct Case {
  int num_heads, num_kv_heads, head_dim, block_size, tile_rows, warps;
  std::vector<Seq> seqs;
  float q_scale;
  float fp8_kv_scale = 0.0f;  // > 0: an FP8 cache with this k and v scale; the reference reads its dequantized values
};

std::vector<float> random_bf16(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_float(float_to_bf16(dist(rng)));
  return v;
}

void run_case(const Case& c, std::mt19937& rng) {
  const int kv_dim = c.num_kv_heads * c.head_dim, q_dim = c.num_heads * c.head_dim, q_stride = q_dim + 2 * kv_dim;
  int total_blocks = 3;
  for (const Seq& s : c.seqs) total_blocks += (s.num_cached + s.n + c.block_size - 1) / c.block_size;
  std::vector<int32_t> physical(static_cast<size_t>(total_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  const size_t cache_elems = size_t(total_blocks) * c.block_size * kv_dim;
  std::vector<float> k_cache = random_bf16(cache_elems, rng, 1.0f), v_cache = random_bf16(cache_elems, rng, 1.0f);
  std::vector<uint8_t> k_codes, v_codes;
  if (c.fp8_kv_scale > 0.0f) {
    for (std::vector<float>* cache : {&k_cache, &v_cache}) {
      std::vector<uint8_t>& codes = cache == &k_cache ? k_codes : v_codes;
      for (float& x : *cache) {
        codes.push_back(float_to_f8e4m3(x / c.fp8_kv_scale));
        x = f8e4m3_to_float(codes.back()) * c.fp8_kv_scale;
      }
    }
  }
  std::vector<float> v_abs(v_cache.size());
  float v_max = 0.0f;
  for (size_t i = 0; i < v_cache.size(); ++i) {
    v_abs[i] = std::fabs(v_cache[i]);
    v_max = std::max(v_max, v_abs[i]);
  }
  std::vector<int32_t> q_start, num_new, num_cached, block_offset, tables, tiles;
  std::vector<std::vector<int32_t>> seq_tables;
  int rows = 0, next_block = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    q_start.push_back(rows);
    num_new.push_back(c.seqs[s].n);
    num_cached.push_back(c.seqs[s].num_cached);
    block_offset.push_back(int32_t(tables.size()));
    std::vector<int32_t> table;
    for (int b = 0; b < (c.seqs[s].num_cached + c.seqs[s].n + c.block_size - 1) / c.block_size; ++b) {
      table.push_back(physical[size_t(next_block++)]);
    }
    tables.insert(tables.end(), table.begin(), table.end());
    seq_tables.push_back(table);
    for (int first = 0; first < c.seqs[s].n; first += c.tile_rows) {
      tiles.push_back(int32_t(s));
      tiles.push_back(first);
    }
    rows += c.seqs[s].n;
  }
  const std::vector<float> qkv = random_bf16(size_t(rows) * q_stride, rng, c.q_scale);

  std::vector<float> q(size_t(rows) * q_dim), want(q.size()), abs_weighted(q.size());
  for (int r = 0; r < rows; ++r) std::copy_n(qkv.begin() + size_t(r) * q_stride, q_dim, q.begin() + size_t(r) * q_dim);
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    using Target = std::pair<const std::vector<float>*, std::vector<float>*>;
    for (const Target& target : {Target{&v_cache, &want}, Target{&v_abs, &abs_weighted}}) {
      cpu::PagedKv cache{const_cast<float*>(k_cache.data()), const_cast<float*>(target.first->data()), c.block_size,
                         c.num_kv_heads, c.head_dim};
      cpu::attention(q.data() + size_t(q_start[s]) * q_dim, cache, seq_tables[s].data(), num_cached[s], num_new[s],
                     c.num_heads, nullptr, scale, target.second->data() + size_t(q_start[s]) * q_dim, nullptr);
    }
  }

  std::vector<uint16_t> qkv_bits(qkv.size()), k_bits(cache_elems), v_bits(cache_elems);
  for (size_t i = 0; i < qkv.size(); ++i) qkv_bits[i] = float_to_bf16(qkv[i]);
  for (size_t i = 0; i < cache_elems; ++i) {
    k_bits[i] = float_to_bf16(k_cache[i]);
    v_bits[i] = float_to_bf16(v_cache[i]);
  }
  std::vector<uint16_t> out(want.size(), 0x7FC1);
  cuda::PrefillParams p{};
  p.q = reinterpret_cast<const __nv_bfloat16*>(qkv_bits.data());
  p.q_stride = q_stride;
  p.k_cache = reinterpret_cast<const __nv_bfloat16*>(k_bits.data());
  p.v_cache = reinterpret_cast<const __nv_bfloat16*>(v_bits.data());
  p.seq_q_start = q_start.data();
  p.seq_num_new = num_new.data();
  p.seq_num_cached = num_cached.data();
  p.seq_block_offset = block_offset.data();
  p.block_tables = tables.data();
  p.tiles = tiles.data();
  p.num_heads = c.num_heads;
  p.group = c.num_heads / c.num_kv_heads;
  p.kv_dim = kv_dim;
  p.block_size = c.block_size;
  p.scale_log2 = scale * cuda::kLog2e;
  if (c.fp8_kv_scale > 0.0f) {
    p.k_codes = k_codes.data();
    p.v_codes = v_codes.data();
    p.scale_log2 *= c.fp8_kv_scale;
    p.v_dequant = c.fp8_kv_scale;
  }
  p.out = reinterpret_cast<__nv_bfloat16*>(out.data());
  const int num_tiles = int(tiles.size() / 2);
  // The tilings prefill_attention_bf16 compiles (PrefillTiling): 64 rows / 4 warps, 128 / 8, 128 / 4.
  if (c.head_dim == 64) {
    if (c.tile_rows == 64) emulate_launch<64, 4, 1>(p, num_tiles);
    if (c.tile_rows == 128)
      c.warps == 8 ? emulate_launch<64, 8, 1>(p, num_tiles) : emulate_launch<64, 4, 2>(p, num_tiles);
  } else {
    if (c.tile_rows == 64) emulate_launch<128, 4, 1>(p, num_tiles);
    if (c.tile_rows == 128) {
      c.warps == 8 ? emulate_launch<128, 8, 1>(p, num_tiles) : emulate_launch<128, 4, 2>(p, num_tiles);
    }
  }

  for (size_t i = 0; i < out.size(); ++i) {
    const float got = bf16_to_float(out[i]);
    const float tolerance =
        std::fabs(want[i]) / 256.0f + 1.01f * (abs_weighted[i] / 256.0f + 1e-4f * v_max);  // as on the GPU
    ASSERT_TRUE(std::fabs(got - want[i]) <= tolerance)
        << "heads " << c.num_heads << "/" << c.num_kv_heads << " head_dim " << c.head_dim << " block " << c.block_size
        << " tile_rows " << c.tile_rows << ": element " << i << " (row " << i / size_t(q_dim) << ") got " << got
        << " want " << want[i] << " (tolerance " << tolerance << ")";
  }
}

TEST(PrefillAttentionEmulation, KernelCodeMatchesCpuAttentionOnTheCpu) {
  std::mt19937 rng(51);
  // Tiles cut mid-chunk and mid-block, cached prefixes off the tile and block grid, one-row chunks, GQA, both tile
  // sizes and head dims.
  run_case({2, 1, 128, 16, 64, 4, {{0, 70}, {37, 66}, {5, 1}}, 1.0f}, rng);
  run_case({4, 2, 64, 5, 64, 4, {{0, 65}, {130, 20}}, 3.0f}, rng);
  run_case({3, 3, 128, 8, 128, 8, {{17, 129}}, 2.0f}, rng);
  run_case({2, 1, 64, 16, 128, 8, {{64, 64}, {63, 130}}, 1.0f}, rng);
  run_case({2, 1, 128, 16, 128, 4, {{0, 150}, {40, 20}}, 2.0f}, rng);
  run_case({3, 1, 64, 8, 128, 4, {{100, 129}}, 1.0f}, rng);
}

TEST(PrefillAttentionEmulation, Fp8CacheKernelCodeMatchesCpuAttentionOverTheDequantizedCache) {
  std::mt19937 rng(52);
  // Scales that saturate the largest values (|x| > 448 × scale) and leave small ones subnormal.
  run_case({2, 1, 128, 16, 64, 4, {{0, 70}, {37, 26}}, 1.0f, 2.0f / 448.0f}, rng);
  run_case({4, 2, 64, 5, 128, 4, {{3, 65}}, 2.0f, 0.5f / 448.0f}, rng);
}

}  // namespace
}  // namespace qed::testing
