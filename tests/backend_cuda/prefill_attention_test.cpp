// Tensor-core prefill attention (prefill_attention_kernels.h) against cpu::attention on random bf16 Q/K/V in
// shuffled physical blocks: fresh prompts of 1..700 tokens (on and off the 64-row tile and the block size), chunked
// prefill over cached prefixes of any length, GQA ratios 1/5/8, head_dim 64/128, several sequences and tiles in any
// order per launch, every compiled tiling (64 rows / 4 warps, 128 / 8, 128 / 4), and the backend's mixed step (prefill
// tiles + flash-decoding rows through a row list, split-K).
//
// Tolerance of the prefill kernel's rows. The reference is fp32 on the same bf16 inputs. The kernel rounds the
// unnormalised weights p = exp(s - m) ∈ [0, 1] to bf16 (relative error ≤ 2⁻⁸) for the tensor-core P·V and divides
// by the fp32 sum of the unrounded p, so an output element moves by at most 2⁻⁸ · Σᵢ wᵢ·|vᵢ| (w the exact softmax
// weights) — computed per element by running cpu::attention on |V| — plus fp32 noise (summation order, exp2 vs exp,
// tensor-core accumulation: 1e-4 · max|V| as in attention_test.cpp), then one bf16 rounding of the result (½ ulp
// relative). The bound follows Σ w·|v| while one wrong key moves an output by its own weight, which for long flat
// rows (w ~ 1/700) can fall under it; so the cases also use peaky scores (q scaled up: a few keys carry most of the
// weight, and a wrong key, slot or mask bit moves an output by a large part of |v|), and
// ToleranceRejectsAMaskMissingOneKey checks that the tolerance does reject a one-key causal error. Rows of the
// flash-decoding kernel keep attention_test.cpp's tolerance (½ bf16 ulp + 1e-4 · max|V|).
#include <algorithm>
#include <cstring>
#include <iostream>
#include <numeric>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/prefill_attention_kernels.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "cuda_test_util.h"

namespace qed::testing {
namespace {

enum class Kernel { Prefill, Decode, Tree };  // which kernel computes the sequence's rows (Tree: decode + mask)

struct Seq {
  int num_cached = 0;
  int n = 1;
  Kernel kernel = Kernel::Prefill;
};

struct Case {
  int num_heads, num_kv_heads, head_dim, block_size;
  std::vector<Seq> seqs;
  float q_scale = 1.0f;       // scores ~ N(0, q_scale²): > 1 makes the softmax peaky
  int decode_partitions = 0;  // 0: attention_partitions() decides
  float fp8_scale = 0.0f;     // > 0: an FP8 E4M3 cache with this k and v scale; the reference reads its values
};

ThreadPool& pool() {
  static ThreadPool instance;
  return instance;
}

constexpr uint16_t kPoison = 0x7FC1;
// Every compiled tiling runs every case.
constexpr cuda::PrefillTiling kTilings[] = {{64, 4}, {128, 8}, {128, 4}};
constexpr float kPRounding = 1.0f / 256.0f;  // relative error of rounding p to bf16

// The test's inputs and the reference outputs of one case.
struct Problem {
  int rows = 0, q_dim = 0, q_stride = 0;
  std::vector<float> qkv, k_cache, v_cache;
  std::vector<uint8_t> k_codes, v_codes;  // the FP8 cache (Case::fp8_scale > 0); k_cache/v_cache hold its values
  std::vector<int32_t> q_start, num_new, num_cached, block_offset, block_tables, mask_offset, row_seq;
  std::vector<uint8_t> masks;
  std::vector<std::vector<int32_t>> tables;
  std::vector<std::vector<uint8_t>> seq_masks;
  std::vector<int32_t> prefill_seqs, decode_rows;
  std::vector<Kernel> row_kernel;
  std::vector<float> want, abs_weighted;  // reference on V, and on |V| (Σ w·|v| per element)
  float v_max = 0.0f;
  int decode_max_kv_len = 0;
};

// cpu::attention of every sequence; `visible_override` (n × n per sequence, optional) replaces the causal mask.
std::vector<float> reference(const Case& c, const Problem& p, const std::vector<float>& v_cache,
                             const std::vector<std::vector<uint8_t>>& masks) {
  std::vector<float> q(size_t(p.rows) * p.q_dim);
  for (int r = 0; r < p.rows; ++r) {
    std::copy_n(p.qkv.begin() + size_t(r) * p.q_stride, p.q_dim, q.begin() + size_t(r) * p.q_dim);
  }
  cpu::PagedKv cache{const_cast<float*>(p.k_cache.data()), const_cast<float*>(v_cache.data()), c.block_size,
                     c.num_kv_heads, c.head_dim};
  std::vector<float> out(size_t(p.rows) * p.q_dim);
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    cpu::attention(q.data() + size_t(p.q_start[s]) * p.q_dim, cache, p.tables[s].data(), p.num_cached[s], p.num_new[s],
                   c.num_heads, masks[s].empty() ? nullptr : masks[s].data(), 1.0f / std::sqrt(float(c.head_dim)),
                   out.data() + size_t(p.q_start[s]) * p.q_dim, &pool());
  }
  return out;
}

Problem make_problem(const Case& c, std::mt19937& rng) {
  Problem p;
  const int kv_dim = c.num_kv_heads * c.head_dim;
  p.q_dim = c.num_heads * c.head_dim;
  p.q_stride = p.q_dim + 2 * kv_dim;  // as inside the fused qkv row
  int total_blocks = 3;               // unused blocks in between
  for (const Seq& s : c.seqs) total_blocks += (s.num_cached + s.n + c.block_size - 1) / c.block_size;
  std::vector<int32_t> physical(static_cast<size_t>(total_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  const size_t cache_elems = size_t(total_blocks) * c.block_size * kv_dim;
  p.k_cache = random_bf16_values(cache_elems, rng, 1.0f);
  p.v_cache = random_bf16_values(cache_elems, rng, 1.0f);
  if (c.fp8_scale > 0.0f) {
    for (auto [values, codes] : {std::pair{&p.k_cache, &p.k_codes}, std::pair{&p.v_cache, &p.v_codes}}) {
      codes->resize(cache_elems);
      cpu::quantize_fp8_per_tensor(values->data(), cache_elems, c.fp8_scale, codes->data());
      cpu::dequantize_fp8_per_tensor(codes->data(), cache_elems, c.fp8_scale, values->data());
    }
  }
  for (float v : p.v_cache) p.v_max = std::max(p.v_max, std::fabs(v));

  int next_block = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    const Seq& spec = c.seqs[s];
    p.q_start.push_back(p.rows);
    p.num_new.push_back(spec.n);
    p.num_cached.push_back(spec.num_cached);
    p.block_offset.push_back(int32_t(p.block_tables.size()));
    std::vector<int32_t> table;
    for (int b = 0; b < (spec.num_cached + spec.n + c.block_size - 1) / c.block_size; ++b) {
      table.push_back(physical[size_t(next_block++)]);
    }
    p.block_tables.insert(p.block_tables.end(), table.begin(), table.end());
    p.tables.push_back(table);
    std::vector<uint8_t> mask;
    if (spec.kernel == Kernel::Tree) {
      mask.assign(size_t(spec.n) * spec.n, 0);
      for (int i = 0; i < spec.n; ++i) {
        for (int j = 0; j < spec.n; ++j) mask[size_t(i) * spec.n + j] = (i == j) || (j < i && rng() % 2);
      }
      p.mask_offset.push_back(int32_t(p.masks.size()));
      p.masks.insert(p.masks.end(), mask.begin(), mask.end());
    } else {
      p.mask_offset.push_back(-1);
    }
    p.seq_masks.push_back(mask);
    if (spec.kernel == Kernel::Prefill) {
      p.prefill_seqs.push_back(int32_t(s));
    } else {
      for (int i = 0; i < spec.n; ++i) p.decode_rows.push_back(p.rows + i);
      p.decode_max_kv_len = std::max(p.decode_max_kv_len, spec.num_cached + spec.n);
    }
    for (int i = 0; i < spec.n; ++i) {
      p.row_seq.push_back(int32_t(s));
      p.row_kernel.push_back(spec.kernel);
    }
    p.rows += spec.n;
  }
  std::vector<float> q_part = random_bf16_values(size_t(p.rows) * p.q_stride, rng, c.q_scale);
  p.qkv = std::move(q_part);
  p.want = reference(c, p, p.v_cache, p.seq_masks);
  std::vector<float> v_abs(p.v_cache.size());
  for (size_t i = 0; i < v_abs.size(); ++i) v_abs[i] = std::fabs(p.v_cache[i]);
  p.abs_weighted = reference(c, p, v_abs, p.seq_masks);
  return p;
}

// (sequence, first row) of every tile of the prefill sequences, in a random order (the kernel must not depend on it).
std::vector<int32_t> make_tiles(const Problem& p, int tile_rows, std::mt19937& rng) {
  std::vector<std::pair<int32_t, int32_t>> tiles;
  for (int32_t s : p.prefill_seqs) {
    for (int32_t first = 0; first < p.num_new[size_t(s)]; first += tile_rows) tiles.emplace_back(s, first);
  }
  std::shuffle(tiles.begin(), tiles.end(), rng);
  std::vector<int32_t> flat;
  for (const auto& [s, first] : tiles) {
    flat.push_back(s);
    flat.push_back(first);
  }
  return flat;
}

float tolerance(const Problem& p, size_t element, Kernel kernel) {
  const float absolute = 1e-4f * p.v_max;
  if (kernel != Kernel::Prefill) return kBf16HalfUlp * std::fabs(p.want[element]) + absolute;
  return kBf16HalfUlp * std::fabs(p.want[element]) + 1.01f * (kPRounding * p.abs_weighted[element] + absolute);
}

std::string describe(const Case& c) {
  return "heads " + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) + " head_dim " +
         std::to_string(c.head_dim) + " block " + std::to_string(c.block_size) + " q_scale " +
         std::to_string(c.q_scale);
}

// Element i of the output as the test reports it.
std::string where(const Problem& p, const Case& c, size_t i) {
  const size_t row = i / size_t(p.q_dim);
  const int seq = p.row_seq[row];
  return "row " + std::to_string(row) + " (seq " + std::to_string(seq) + " new row " +
         std::to_string(int(row) - p.q_start[size_t(seq)]) + " of " + std::to_string(p.num_new[size_t(seq)]) +
         ", cached " + std::to_string(p.num_cached[size_t(seq)]) + ") head " +
         std::to_string((i / size_t(c.head_dim)) % size_t(c.num_heads)) + " d " +
         std::to_string(i % size_t(c.head_dim));
}

struct DeviceProblem {
  cuda::DeviceBuffer qkv, k, v, q_start, num_new, num_cached, block_offset, tables, mask_offset, masks, row_seq,
      decode_rows;
  cuda::AttentionBatch batch;
  cuda::AttentionShape shape;
  cuda::KvCacheView cache;
};

DeviceProblem upload_problem(const Case& c, const Problem& p) {
  const bool fp8 = c.fp8_scale > 0.0f;
  DeviceProblem d{upload(to_bf16(p.qkv)),
                  fp8 ? upload(p.k_codes) : upload(to_bf16(p.k_cache)),
                  fp8 ? upload(p.v_codes) : upload(to_bf16(p.v_cache)),
                  upload(p.q_start),
                  upload(p.num_new),
                  upload(p.num_cached),
                  upload(p.block_offset),
                  upload(p.block_tables),
                  upload(p.mask_offset),
                  upload(p.masks),
                  upload(p.row_seq),
                  upload(p.decode_rows),
                  {},
                  {},
                  {}};
  d.cache = {d.k.data(), d.v.data(), fp8, fp8 ? c.fp8_scale : 1.0f, fp8 ? c.fp8_scale : 1.0f};
  d.batch.row_seq = d.row_seq.as<int32_t>();
  d.batch.seq_q_start = d.q_start.as<int32_t>();
  d.batch.seq_num_new = d.num_new.as<int32_t>();
  d.batch.seq_num_cached = d.num_cached.as<int32_t>();
  d.batch.seq_block_offset = d.block_offset.as<int32_t>();
  d.batch.block_tables = d.tables.as<int32_t>();
  d.batch.seq_mask_offset = d.mask_offset.as<int32_t>();
  d.batch.masks = d.masks.as<uint8_t>();
  d.batch.row_list = int(p.decode_rows.size()) == p.rows ? nullptr : d.decode_rows.as<int32_t>();
  d.batch.rows = int(p.decode_rows.size());
  d.batch.max_kv_len = p.decode_max_kv_len;
  d.shape = {c.num_heads, c.num_kv_heads, c.head_dim, c.block_size, 1.0f / std::sqrt(float(c.head_dim))};
  return d;
}

// The prefill kernel's output for the given tiles, on a poisoned buffer (returned for the decode kernel to add to).
cuda::DeviceBuffer run_prefill(const Problem& p, const DeviceProblem& d, const std::vector<int32_t>& tiles,
                               cuda::PrefillTiling tiling) {
  auto d_tiles = upload(tiles);
  auto d_out = poisoned_bf16(p.want.size());
  cuda::prefill_attention(d.qkv.as<uint16_t>(), p.q_stride, d.cache, d.batch, d_tiles.as<int32_t>(),
                          int(tiles.size() / 2), tiling, d.shape, d_out.as<uint16_t>(), nullptr);
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  return d_out;
}

// For each tile size: the prefill kernel alone (its rows must match, every other row must stay untouched), then the
// flash-decoding kernel on the remaining rows as the backend does (the whole output must match).
void run_case(const Case& c, std::mt19937& rng) {
  const Problem p = make_problem(c, rng);
  DeviceProblem d = upload_problem(c, p);
  for (const cuda::PrefillTiling tiling : kTilings) {
    const std::string what =
        describe(c) + " tiling " + std::to_string(tiling.rows) + " rows / " + std::to_string(tiling.warps) + " warps";
    cuda::DeviceBuffer d_out = run_prefill(p, d, make_tiles(p, tiling.rows, rng), tiling);
    const std::vector<uint16_t> bits = download<uint16_t>(d_out, p.want.size());
    float worst = 0.0f;  // largest |error| / tolerance over the prefill rows, printed for tightening
    for (size_t i = 0; i < bits.size(); ++i) {
      const Kernel kernel = p.row_kernel[i / size_t(p.q_dim)];
      if (kernel != Kernel::Prefill) {
        ASSERT_EQ(bits[i], kPoison) << what << ": prefill kernel wrote " << where(p, c, i) << ", not one of its rows";
        continue;
      }
      const float got = bf16_to_float(bits[i]);
      const float error = std::fabs(got - p.want[i]);
      const float bound = tolerance(p, i, kernel);
      ASSERT_TRUE(error <= bound) << what << ": " << where(p, c, i) << " got " << got << " want " << p.want[i]
                                  << " (tolerance " << bound << ")";
      worst = std::max(worst, error / bound);
    }
    std::cout << "[ prefill ] " << what << ": worst error / tolerance " << worst << "\n";
    if (p.decode_rows.empty()) continue;

    const int partitions = c.decode_partitions > 0
                               ? c.decode_partitions
                               : cuda::attention_partitions(d.batch, d.shape, 132, size_t(64) << 20);
    cuda::DeviceBuffer partials(
        std::max<size_t>(p.decode_rows.size() * c.num_heads * partitions * cuda::attention_partial_floats(c.head_dim),
                         1) *
        sizeof(float));
    cuda::paged_attention(d.qkv.as<uint16_t>(), p.q_stride, d.cache, d.batch, d.shape, partitions, partials.as<float>(),
                          d_out.as<uint16_t>(), nullptr);
    const std::vector<float> got = from_bf16(download<uint16_t>(d_out, p.want.size()));
    for (size_t i = 0; i < got.size(); ++i) {
      const float bound = tolerance(p, i, p.row_kernel[i / size_t(p.q_dim)]);
      ASSERT_TRUE(std::fabs(got[i] - p.want[i]) <= bound)
          << what << " partitions " << partitions << ": " << where(p, c, i) << " got " << got[i] << " want "
          << p.want[i] << " (tolerance " << bound << ")";
    }
  }
}

std::vector<Seq> fresh_prompts(const std::vector<int>& lengths) {
  std::vector<Seq> seqs;
  for (int n : lengths) seqs.push_back({0, n, Kernel::Prefill});
  return seqs;
}

using PrefillAttentionKernel = CudaTest;

TEST_F(PrefillAttentionKernel, FreshPromptsOfManyLengthsInOneLaunch) {
  std::mt19937 rng(31);
  // On, around and between the 64-row tile and the 16-token block; several tiles per sequence, many sequences.
  const std::vector<Seq> seqs = fresh_prompts({1, 2, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 255, 333, 700});
  run_case({10, 2, 128, 16, seqs}, rng);                         // GQA 5, the 14B head_dim
  run_case({8, 1, 64, 16, seqs}, rng);                           // GQA 8
  run_case({4, 4, 128, 16, seqs, 3.0f}, rng);                    // MHA, peaky
  run_case({40, 8, 128, 16, fresh_prompts({1, 96, 300})}, rng);  // the 14B head layout
}

TEST_F(PrefillAttentionKernel, ChunkedPrefillOverCachedPrefixes) {
  std::mt19937 rng(32);
  // Prefixes on and off block and tile boundaries, chunks shorter and longer than a tile, a one-row chunk.
  const std::vector<Seq> seqs = {{50, 37}, {16, 64}, {64, 64}, {100, 129}, {1000, 65}, {17, 700}, {5, 1}, {3, 200}};
  for (int block_size : {16, 8, 32, 5}) run_case({8, 2, 128, block_size, seqs}, rng);
  run_case({6, 6, 64, 16, seqs, 3.0f}, rng);
  run_case({16, 2, 64, 16, {{2047, 130}, {1, 63}}, 2.0f}, rng);
}

TEST_F(PrefillAttentionKernel, GqaRatiosAndHeadDims) {
  std::mt19937 rng(33);
  const std::vector<Seq> seqs = {{0, 130}, {37, 77}, {200, 5}};
  for (int head_dim : {64, 128}) {
    for (auto [heads, kv_heads] : std::vector<std::pair<int, int>>{{4, 4}, {10, 2}, {16, 2}, {12, 1}}) {
      run_case({heads, kv_heads, head_dim, 16, seqs}, rng);
      run_case({heads, kv_heads, head_dim, 16, seqs, 4.0f}, rng);
    }
  }
}

TEST_F(PrefillAttentionKernel, MixedStepWithDecodeRowsAndTreeChunks) {
  std::mt19937 rng(34);
  // The backend's split: prefill tiles for long causal chunks, the flash-decoding kernel (through its row list, with
  // split-K) for decode rows, short causal chunks and tree-masked chunks, on disjoint rows of one output.
  const std::vector<Seq> seqs = {{0, 70, Kernel::Prefill},    {3000, 1, Kernel::Decode}, {40, 6, Kernel::Tree},
                                 {120, 100, Kernel::Prefill}, {17, 1, Kernel::Decode},   {9, 12, Kernel::Decode},
                                 {0, 33, Kernel::Tree},       {500, 64, Kernel::Prefill}};
  for (int partitions : {0, 1, 3, 7}) run_case({40, 8, 128, 16, seqs, 1.0f, partitions}, rng);
  run_case({8, 2, 64, 16, seqs, 2.0f}, rng);
}

// An FP8 E4M3 cache: the prefill kernel converts codes to bf16 values on their way into shared memory (k_scale in
// the softmax scale, v_scale in the output), the flash-decoding kernel reads the rest; both against the CPU over the
// dequantized cache with the bf16 cache's tolerance. Scales saturate |x| > 448 × scale and leave small values
// subnormal.
TEST_F(PrefillAttentionKernel, Fp8CacheMatchesTheDequantizedReference) {
  std::mt19937 rng(36);
  const std::vector<Seq> seqs = {
      {0, 150, Kernel::Prefill}, {37, 66, Kernel::Prefill}, {500, 1, Kernel::Decode}, {20, 5, Kernel::Tree}};
  run_case({10, 2, 128, 16, seqs, 1.0f, 0, 2.0f / 448.0f}, rng);
  run_case({8, 1, 64, 5, seqs, 2.0f, 0, 0.5f / 448.0f}, rng);
}

TEST_F(PrefillAttentionKernel, ToleranceRejectsAMaskMissingOneKey) {
  // The tolerance must be tight enough to see one key too few per row: compare the kernel's output with the
  // reference of a mask where row i misses its own new token (sees the prefix and new rows < i). A numpy model of
  // this case puts ~50% of the elements outside the tolerance of that wrong reference.
  std::mt19937 rng(35);
  const int n = 150;
  const Case c{8, 2, 128, 16, {{20, n}}};
  const Problem p = make_problem(c, rng);
  std::vector<std::vector<uint8_t>> shifted(1, std::vector<uint8_t>(size_t(n) * n, 0));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < i; ++j) shifted[0][size_t(i) * n + j] = 1;
  }
  const std::vector<float> wrong = reference(c, p, p.v_cache, shifted);
  DeviceProblem d = upload_problem(c, p);
  const cuda::DeviceBuffer d_out = run_prefill(p, d, make_tiles(p, 64, rng), cuda::PrefillTiling{64, 4});
  const std::vector<float> got = from_bf16(download<uint16_t>(d_out, p.want.size()));
  size_t close_to_right = 0, far_from_wrong = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float bound = tolerance(p, i, Kernel::Prefill);
    close_to_right += std::fabs(got[i] - p.want[i]) <= bound;
    far_from_wrong += !(std::fabs(got[i] - wrong[i]) <= bound);
  }
  EXPECT_EQ(close_to_right, got.size());
  EXPECT_GT(far_from_wrong, got.size() / 5) << far_from_wrong << " of " << got.size();
}

TEST_F(PrefillAttentionKernel, RejectsUncompiledHeadDimsAndTileSizes) {
  cuda::AttentionBatch batch;
  const cuda::AttentionShape shape{4, 4, 96, 16, 0.1f};
  EXPECT_FALSE(cuda::prefill_attention_supports(96));
  EXPECT_THROW(
      cuda::prefill_attention_bf16(nullptr, 384, nullptr, nullptr, batch, nullptr, 1, {64, 4}, shape, nullptr, nullptr),
      Error);
  const cuda::AttentionShape good{4, 4, 128, 16, 0.1f};
  EXPECT_THROW(cuda::prefill_attention_bf16(nullptr, 1536, nullptr, nullptr, batch, nullptr, 1, {128, 2}, good, nullptr,
                                            nullptr),
               Error);
}

}  // namespace
}  // namespace qed::testing
