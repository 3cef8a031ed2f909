// The verify-step attention CTA (attention_verify_tile.cuh: one CTA per sequence, KV head and KV partition for all
// the sequence's new rows) run on the CPU: every CUDA thread of a CTA is a std::thread, __syncthreads, the quad
// shuffles and mma.sync meet at barriers (emulated_cuda.h, the PTX ISA's m16n8k16 fragment layouts), CTAs run one
// after another (so the fused split-K merge's last CTA is the last partition), cp.async is a plain copy. The FP8
// code decoding is fp8_convert.cuh's own bit code. So CI, which has no GPU, checks the kernel's M-row mapping (row
// i x group + head), tree-mask and causal visibility, partitioning (empty partitions included), online softmax,
// fragment layouts and fused merge against cpu::attention, with the GPU test's tolerance (attention_test.cpp: half
// a bf16 ulp relative plus 1e-4 x max|V|; the emulated MMA sums in another order, ~1e-6 relative).
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/attention_kernels.h"
#include "core/dtype.h"

// ---- The emulated CUDA environment the kernel body is compiled against. ----
#include "emulated_cuda.h"

inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline int __float2int_rn(float a) {
  return int(std::nearbyint(a));
}
inline void __threadfence() {}
inline unsigned atomicAdd(uint32_t* p, unsigned v) {  // called by one thread of the CTA
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline float __ldcg(const float* p) {
  return *p;
}
inline float2 __ldcg(const float2* p) {
  if (reinterpret_cast<uintptr_t>(p) % 8 != 0) qed::testing::emulated::fail_access("misaligned 8-byte load", p);
  return *p;
}
inline float4 __ldcg(const float4* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) qed::testing::emulated::fail_access("misaligned 16-byte load", p);
  return *p;
}

namespace qed::cuda {
using std::isnan;
using std::max;
using std::min;
}  // namespace qed::cuda

#include "backend/cuda/fp8_convert.cuh"

namespace qed::cuda {
namespace {

// attention_kernels.cu's constants and helpers the tile uses.
constexpr int kThreads = 128;
constexpr int kMinPartitionKeys = 64;
constexpr int kMaxFusedMergePartitions = 64;
constexpr float kLog2e = 1.4426950408889634f;

int row_partition_size(int kv_len, int partitions) {
  const int even = (kv_len + partitions - 1) / partitions;
  return max(kMinPartitionKeys, (even + 15) / 16 * 16);
}
void pdl_wait() {}
void pdl_trigger() {}
void cp_async_16_shared(void* dst, const void* src, bool valid) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0) testing::emulated::fail_access("misaligned cp.async", dst);
  if (valid) {
    std::memcpy(dst, src, 16);
  } else {
    std::memset(dst, 0, 16);
  }
}
void cp_async_commit() {}
template <int PENDING>
void cp_async_wait_group() {}

template <bool F16>
float operand_half(uint32_t reg, int high) {
  const uint16_t bits = uint16_t(high ? reg >> 16 : reg & 0xFFFFu);
  if constexpr (F16) {
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  } else {
    return bf16_to_float(bits);
  }
}
template <bool F16>
void mma_m16n8k16_f32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  testing::emulated::mma_m16n8k16(d, a, b0, b1, operand_half<F16>);
}
template <bool F16>
uint32_t pack_operands(float lo, float hi) {
  uint16_t l, h;
  if constexpr (F16) {
    l = static_cast<__half_raw>(__float2half_rn(lo)).x;
    h = static_cast<__half_raw>(__float2half_rn(hi)).x;
  } else {
    l = float_to_bf16(lo);
    h = float_to_bf16(hi);
  }
  return uint32_t(l) | (uint32_t(h) << 16);
}
template <bool F16>
float round_to_operand(float x) {
  return operand_half<F16>(pack_operands<F16>(x, 0.0f), 0);
}
uint32_t bf16x2_to_f16x2(uint32_t bits) {
  return pack_operands<true>(operand_half<false>(bits, 0), operand_half<false>(bits, 1));
}
uint4 operand_words(uint4 bf16_words) {
  return bf16_words;
}
uint4 operand_words(uint2 codes) {
  uint4 w;
  e4m3x4_to_f16x2_times_2m8(codes.x, w.x, w.y);
  e4m3x4_to_f16x2_times_2m8(codes.y, w.z, w.w);
  return w;
}

}  // namespace
}  // namespace qed::cuda

#include "backend/cuda/attention_verify_tile.cuh"

#undef threadIdx
#undef blockIdx
#undef gridDim
#undef __shared__

namespace qed::testing {
namespace {

struct SeqSpec {
  int num_cached, n;
  bool tree;
};

struct Case {
  int num_heads, num_kv_heads, head_dim, block_size, partitions;
  std::vector<SeqSpec> seqs;
  bool fp8 = false;
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
  for (const SeqSpec& s : c.seqs) total_blocks += (s.num_cached + s.n + c.block_size - 1) / c.block_size;
  std::vector<int32_t> physical(static_cast<size_t>(total_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  const size_t cache_elems = size_t(total_blocks) * c.block_size * kv_dim;
  std::vector<float> k_cache = random_bf16(cache_elems, rng, 1.0f), v_cache = random_bf16(cache_elems, rng, 1.0f);
  std::vector<uint8_t> k_codes(cache_elems), v_codes(cache_elems);
  float k_scale = 1.0f, v_scale = 1.0f;
  if (c.fp8) {
    k_scale = cpu::amax(k_cache.data(), cache_elems) / cpu::kFp8E4M3Max;
    v_scale = 0.5f * cpu::amax(v_cache.data(), cache_elems) / cpu::kFp8E4M3Max;  // the largest saturate
    cpu::quantize_fp8_per_tensor(k_cache.data(), cache_elems, k_scale, k_codes.data());
    cpu::quantize_fp8_per_tensor(v_cache.data(), cache_elems, v_scale, v_codes.data());
    cpu::dequantize_fp8_per_tensor(k_codes.data(), cache_elems, k_scale, k_cache.data());
    cpu::dequantize_fp8_per_tensor(v_codes.data(), cache_elems, v_scale, v_cache.data());
  }
  const float v_max = cpu::amax(v_cache.data(), cache_elems);

  std::vector<int32_t> q_start, num_new, num_cached, block_offset, tables, mask_offset;
  std::vector<uint8_t> masks;
  std::vector<std::vector<uint8_t>> seq_masks;
  std::vector<std::vector<int32_t>> seq_tables;
  int rows = 0, next_block = 0;
  for (const SeqSpec& spec : c.seqs) {
    q_start.push_back(rows);
    num_new.push_back(spec.n);
    num_cached.push_back(spec.num_cached);
    block_offset.push_back(int32_t(tables.size()));
    std::vector<int32_t> table;
    for (int b = 0; b < (spec.num_cached + spec.n + c.block_size - 1) / c.block_size; ++b) {
      table.push_back(physical[size_t(next_block++)]);
    }
    tables.insert(tables.end(), table.begin(), table.end());
    seq_tables.push_back(table);
    std::vector<uint8_t> mask;
    if (spec.tree) {
      // A random tree: each token sees itself and a random subset of earlier ones (over an empty prefix a row may
      // then see one key only).
      mask.assign(size_t(spec.n) * spec.n, 0);
      for (int i = 0; i < spec.n; ++i) {
        for (int j = 0; j < spec.n; ++j) mask[size_t(i) * spec.n + j] = (i == j) || (j < i && rng() % 2);
      }
      mask_offset.push_back(int32_t(masks.size()));
      masks.insert(masks.end(), mask.begin(), mask.end());
    } else {
      mask_offset.push_back(-1);
    }
    seq_masks.push_back(mask);
    rows += spec.n;
  }
  if (masks.empty()) masks.push_back(0);

  const std::vector<float> qkv = random_bf16(size_t(rows) * q_stride, rng, 1.0f);
  std::vector<float> q(size_t(rows) * q_dim), want(q.size());
  for (int r = 0; r < rows; ++r) std::copy_n(qkv.begin() + size_t(r) * q_stride, q_dim, q.begin() + size_t(r) * q_dim);
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  cpu::PagedKv cache{k_cache.data(), v_cache.data(), c.block_size, c.num_kv_heads, c.head_dim};
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    cpu::attention(q.data() + size_t(q_start[s]) * q_dim, cache, seq_tables[s].data(), num_cached[s], num_new[s],
                   c.num_heads, seq_masks[s].empty() ? nullptr : seq_masks[s].data(), scale,
                   want.data() + size_t(q_start[s]) * q_dim, nullptr);
  }

  std::vector<uint16_t> qkv_bits(qkv.size()), k_bits(cache_elems), v_bits(cache_elems);
  for (size_t i = 0; i < qkv.size(); ++i) qkv_bits[i] = float_to_bf16(qkv[i]);
  for (size_t i = 0; i < cache_elems; ++i) {
    k_bits[i] = float_to_bf16(k_cache[i]);
    v_bits[i] = float_to_bf16(v_cache[i]);
  }
  const std::vector<int32_t> seq_list = [&] {
    std::vector<int32_t> list(c.seqs.size());
    std::iota(list.begin(), list.end(), 0);
    std::shuffle(list.begin(), list.end(), rng);
    return list;
  }();
  std::vector<uint16_t> out(want.size(), 0x7FC1);  // bf16 NaN: rows the kernel misses fail
  std::vector<uint8_t> out_fp8(want.size(), 0xAB);
  float max_out = 0.0f;
  for (const float x : want) max_out = std::max(max_out, std::fabs(x));
  const float out_scale = std::max(0.5f * max_out / cpu::kFp8E4M3Max, 1e-3f);
  std::vector<float> partials(
      std::max<size_t>(size_t(rows) * c.num_heads * c.partitions * cuda::attention_partial_floats(c.head_dim), 1),
      std::nanf(""));
  std::vector<uint32_t> counters(cuda::attention_merge_counters(rows, {c.num_heads, c.num_kv_heads, c.head_dim}), 0u);

  cuda::VerifyParams p{};
  p.batch.seq_q_start = q_start.data();
  p.batch.seq_num_new = num_new.data();
  p.batch.seq_num_cached = num_cached.data();
  p.batch.seq_block_offset = block_offset.data();
  p.batch.block_tables = tables.data();
  p.batch.seq_mask_offset = mask_offset.data();
  p.batch.masks = masks.data();
  p.seq_list = seq_list.data();
  p.shape = {c.num_heads, c.num_kv_heads, c.head_dim, c.block_size, scale};
  p.q = reinterpret_cast<const __nv_bfloat16*>(qkv_bits.data());
  p.q_stride = q_stride;
  p.k_cache = c.fp8 ? static_cast<const void*>(k_codes.data()) : k_bits.data();
  p.v_cache = c.fp8 ? static_cast<const void*>(v_codes.data()) : v_bits.data();
  p.k_dequant = c.fp8 ? k_scale * 256.0f : 1.0f;
  p.v_dequant = c.fp8 ? v_scale * 256.0f : 1.0f;
  p.partitions = c.partitions;
  p.partials = partials.data();
  p.out = reinterpret_cast<__nv_bfloat16*>(out.data());
  p.out_fp8 = out_fp8.data();
  p.out_fp8_scale = &out_scale;
  p.merge_counters = c.partitions > 1 ? counters.data() : nullptr;  // the fused merge (at most 64 partitions)
  emulated::grid_dim = {unsigned(seq_list.size()), unsigned(c.num_kv_heads), unsigned(c.partitions)};
  for (unsigned x = 0; x < seq_list.size(); ++x) {
    for (unsigned y = 0; y < unsigned(c.num_kv_heads); ++y) {
      for (unsigned z = 0; z < unsigned(c.partitions); ++z) {
        emulated::run_cta({x, y, z}, cuda::kThreads, [&p, &c] {
          if (c.head_dim == 64) {
            c.fp8 ? cuda::attention_verify_kernel<64, true>(p) : cuda::attention_verify_kernel<64, false>(p);
          } else {
            c.fp8 ? cuda::attention_verify_kernel<128, true>(p) : cuda::attention_verify_kernel<128, false>(p);
          }
        });
      }
    }
  }

  const std::string what = "heads " + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) +
                           " head_dim " + std::to_string(c.head_dim) + " block " + std::to_string(c.block_size) +
                           " partitions " + std::to_string(c.partitions) + (c.fp8 ? " fp8" : "");
  for (size_t i = 0; i < out.size(); ++i) {
    const float got = bf16_to_float(out[i]);
    const float tolerance = std::fabs(want[i]) / 256.0f + 1e-4f * v_max;
    ASSERT_TRUE(std::fabs(got - want[i]) <= tolerance)
        << what << ": element " << i << " (row " << i / size_t(q_dim) << ", head " << (i / c.head_dim) % c.num_heads
        << ") got " << got << " want " << want[i] << " (tolerance " << tolerance << ")";
    ASSERT_EQ(out_fp8[i], cpu::quantize_fp8(got, out_scale)) << what << ": E4M3 output code of element " << i;
  }
  EXPECT_TRUE(std::all_of(counters.begin(), counters.end(), [](uint32_t n) { return n == 0; }))
      << what << ": merge counters not re-armed";
}

TEST(VerifyAttentionEmulation, KernelCodeMatchesCpuAttentionForTreesAndCausalChunks) {
  std::mt19937 rng(61);
  // T = 1..8 rows per sequence (trees and causal), G = 1..8 (T x G <= 64: up to four m16 tiles, partly filled),
  // prefixes empty, off the 16/32-key grids and past several partitions; 1 partition (direct output), a few, and
  // more than the shortest sequences have keys for (empty partitions).
  for (const auto& [heads, kv_heads, head_dim] :
       std::vector<std::array<int, 3>>{{5, 1, 128}, {2, 2, 64}, {8, 1, 64}, {3, 1, 128}, {14, 2, 64}}) {
    const int group = heads / kv_heads;
    std::vector<SeqSpec> seqs;
    for (int n = 1; n <= 8 && n * group <= 64; ++n) seqs.push_back({int(rng() % 300), n, rng() % 2 == 0});
    seqs.push_back({0, std::min(8, 64 / group), true});
    seqs.push_back({0, std::min(4, 64 / group), false});
    for (const int partitions : {1, 3, 9}) run_case({heads, kv_heads, head_dim, 16, partitions, seqs}, rng);
  }
}

TEST(VerifyAttentionEmulation, Fp8CacheKernelCodeMatchesCpuAttentionOverTheDequantizedCache) {
  std::mt19937 rng(62);
  for (const auto& [heads, kv_heads, head_dim] : std::vector<std::array<int, 3>>{{5, 1, 128}, {6, 2, 64}}) {
    const int group = heads / kv_heads;
    std::vector<SeqSpec> seqs;
    for (int n = 1; n <= 8 && n * group <= 64; n += 3) seqs.push_back({int(rng() % 200), n, n % 2 == 0});
    for (const int partitions : {1, 4}) {
      Case c{heads, kv_heads, head_dim, 8, partitions, seqs};
      c.fp8 = true;
      run_case(c, rng);
    }
  }
}

}  // namespace
}  // namespace qed::testing
