// Paged attention (prefill, chunked prefill, decode with split-K, tree masks, GQA) against cpu::attention on random
// bf16 K/V in shuffled physical blocks. Tolerance: the reference is fp32 on the same bf16 inputs; the kernel is
// fp32 with an online softmax (a different summation order, ~1e-6 relative) rounded once to bf16, so half a bf16
// ulp relative plus 1e-4 × max|V| absolute for the fp32 noise on outputs near zero. A wrong slot, mask bit or KV
// head moves outputs by ~0.1 × max|V|.
#include <algorithm>
#include <array>
#include <numeric>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/attention_kernels.h"
#include "cuda_test_util.h"

namespace qed::testing {
namespace {

struct SeqSpec {
  int num_cached = 0;
  int n = 1;
  bool tree_mask = false;
  bool hide_everything = false;  // a mask with no bit set and no prefix: the output is zeros
};

struct Case {
  int num_heads, num_kv_heads, head_dim, block_size;
  std::vector<SeqSpec> seqs;
  int forced_partitions = 0;  // 0: attention_partitions() decides
  bool tensor_cores = true;   // false: the CUDA-core kernel at head_dim 64/128 too
  int context_bucket = 0;     // > 0: max_kv_len as a CUDA graph captures it (a bucket past the longest row)
  // > 0: an FP8 E4M3 cache with scale = fp8_scale_fraction × max|x| / 448 per tensor (1: calibrated, < 1: the
  // largest values saturate, >> 1: most codes subnormal); the reference attends over the dequantized values.
  float fp8_scale_fraction = 0.0f;
};

void run_case(const Case& c, std::mt19937& rng) {
  const int kv_dim = c.num_kv_heads * c.head_dim;
  const int q_dim = c.num_heads * c.head_dim;
  const int q_stride = q_dim + 2 * kv_dim;  // as inside the fused qkv row
  int total_blocks = 0;
  for (const SeqSpec& s : c.seqs) total_blocks += (s.num_cached + s.n + c.block_size - 1) / c.block_size;
  total_blocks += 3;  // unused blocks in between
  std::vector<int32_t> physical(total_blocks);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);

  const size_t cache_elems = size_t(total_blocks) * c.block_size * kv_dim;
  std::vector<float> k_cache = random_bf16_values(cache_elems, rng, 1.0f);
  std::vector<float> v_cache = random_bf16_values(cache_elems, rng, 1.0f);
  const bool fp8 = c.fp8_scale_fraction > 0.0f;
  std::vector<uint8_t> k_codes, v_codes;
  float k_scale = 1.0f, v_scale_fp8 = 1.0f;
  if (fp8) {
    k_scale = c.fp8_scale_fraction * cpu::amax(k_cache.data(), cache_elems) / cpu::kFp8E4M3Max;
    v_scale_fp8 = c.fp8_scale_fraction * cpu::amax(v_cache.data(), cache_elems) / cpu::kFp8E4M3Max;
    k_codes.resize(cache_elems);
    v_codes.resize(cache_elems);
    cpu::quantize_fp8_per_tensor(k_cache.data(), cache_elems, k_scale, k_codes.data());
    cpu::quantize_fp8_per_tensor(v_cache.data(), cache_elems, v_scale_fp8, v_codes.data());
    cpu::dequantize_fp8_per_tensor(k_codes.data(), cache_elems, k_scale, k_cache.data());
    cpu::dequantize_fp8_per_tensor(v_codes.data(), cache_elems, v_scale_fp8, v_cache.data());
  }
  const float v_scale =
      *std::max_element(v_cache.begin(), v_cache.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); });
  cpu::PagedKv cpu_cache{const_cast<float*>(k_cache.data()), const_cast<float*>(v_cache.data()), c.block_size,
                         c.num_kv_heads, c.head_dim};

  std::vector<int32_t> row_seq, q_start, num_new, num_cached, block_offset, block_tables, mask_offset;
  std::vector<uint8_t> masks;
  std::vector<std::vector<uint8_t>> seq_masks;
  std::vector<std::vector<int32_t>> tables;
  int rows = 0, next_block = 0, max_kv_len = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    const SeqSpec& spec = c.seqs[s];
    q_start.push_back(rows);
    num_new.push_back(spec.n);
    num_cached.push_back(spec.num_cached);
    block_offset.push_back(int32_t(block_tables.size()));
    std::vector<int32_t> table;
    for (int b = 0; b < (spec.num_cached + spec.n + c.block_size - 1) / c.block_size; ++b) {
      table.push_back(physical[size_t(next_block++)]);
    }
    block_tables.insert(block_tables.end(), table.begin(), table.end());
    tables.push_back(table);
    std::vector<uint8_t> mask;
    if (spec.tree_mask || spec.hide_everything) {
      mask.assign(size_t(spec.n) * spec.n, 0);
      if (!spec.hide_everything) {
        for (int i = 0; i < spec.n; ++i) {
          for (int j = 0; j < spec.n; ++j) mask[size_t(i) * spec.n + j] = (i == j) || (j < i && rng() % 2);
        }
      }
      mask_offset.push_back(int32_t(masks.size()));
      masks.insert(masks.end(), mask.begin(), mask.end());
    } else {
      mask_offset.push_back(-1);
    }
    seq_masks.push_back(mask);
    for (int i = 0; i < spec.n; ++i) row_seq.push_back(int32_t(s));
    rows += spec.n;
    max_kv_len = std::max(max_kv_len, spec.num_cached + spec.n);
  }

  const std::vector<float> qkv = random_bf16_values(size_t(rows) * q_stride, rng, 1.0f);
  std::vector<float> q(size_t(rows) * q_dim);
  for (int r = 0; r < rows; ++r) std::copy_n(qkv.begin() + size_t(r) * q_stride, q_dim, q.begin() + size_t(r) * q_dim);
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  std::vector<float> want(size_t(rows) * q_dim);
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    cpu::attention(q.data() + size_t(q_start[s]) * q_dim, cpu_cache, tables[s].data(), num_cached[s], num_new[s],
                   c.num_heads, seq_masks[s].empty() ? nullptr : seq_masks[s].data(), scale,
                   want.data() + size_t(q_start[s]) * q_dim, nullptr);
  }

  auto d_qkv = upload(to_bf16(qkv));
  auto d_k = fp8 ? upload(k_codes) : upload(to_bf16(k_cache));
  auto d_v = fp8 ? upload(v_codes) : upload(to_bf16(v_cache));
  auto d_row_seq = upload(row_seq);
  auto d_q_start = upload(q_start);
  auto d_num_new = upload(num_new);
  auto d_num_cached = upload(num_cached);
  auto d_block_offset = upload(block_offset);
  auto d_tables = upload(block_tables);
  auto d_mask_offset = upload(mask_offset);
  auto d_masks = upload(masks);
  cuda::AttentionBatch batch;
  batch.row_seq = d_row_seq.as<int32_t>();
  batch.seq_q_start = d_q_start.as<int32_t>();
  batch.seq_num_new = d_num_new.as<int32_t>();
  batch.seq_num_cached = d_num_cached.as<int32_t>();
  batch.seq_block_offset = d_block_offset.as<int32_t>();
  batch.block_tables = d_tables.as<int32_t>();
  batch.seq_mask_offset = d_mask_offset.as<int32_t>();
  batch.masks = d_masks.as<uint8_t>();
  batch.rows = rows;
  batch.max_kv_len = std::max(max_kv_len, c.context_bucket);
  cuda::AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim, c.block_size, scale};
  const size_t partial_capacity = size_t(64) << 20;
  const int partitions =
      c.forced_partitions > 0 ? c.forced_partitions : cuda::attention_partitions(batch, shape, 132, partial_capacity);
  cuda::DeviceBuffer partials(
      std::max<size_t>(size_t(rows) * c.num_heads * partitions * cuda::attention_partial_floats(c.head_dim), 1) *
      sizeof(float));
  const cuda::KvCacheView cache{d_k.data(), d_v.data(), fp8, k_scale, v_scale_fp8};
  // With tensor cores, both loading strategies of the tensor-core CTA (registers; the cp.async ring).
  std::vector<cuda::DecodeKernel> kernels = {cuda::DecodeKernel::CudaCores};
  if (c.tensor_cores) kernels = {cuda::DecodeKernel::TensorCores, cuda::DecodeKernel::TensorCoresPipelined};
  // The fused E4M3 output (the FP8 o_proj's input): a scale that saturates the largest outputs.
  float max_out = 0.0f;
  for (const float x : want) max_out = std::max(max_out, std::fabs(x));
  const float out_scale = std::max(0.5f * max_out / cpu::kFp8E4M3Max, 1e-3f);
  const cuda::DeviceBuffer d_out_scale = upload(std::vector<float>{out_scale});
  // The split-K merge by the merge kernel, and folded into the attention CTAs (the counters must be re-armed after
  // every launch: they are shared by all the launches below).
  cuda::DeviceBuffer counters = upload(std::vector<uint32_t>(cuda::attention_merge_counters(rows, shape), 0u));
  for (const bool fused_merge : {false, true}) {
    for (const cuda::DecodeKernel kernel : kernels) {
      auto d_out = poisoned_bf16(want.size());
      auto d_out_fp8 = upload(std::vector<uint8_t>(want.size(), 0xAB));
      cuda::paged_attention(d_qkv.as<uint16_t>(), q_stride, cache, batch, shape, partitions, partials.as<float>(),
                            d_out.as<uint16_t>(), nullptr, kernel, d_out_fp8.as<uint8_t>(), d_out_scale.as<float>(),
                            fused_merge ? counters.as<uint32_t>() : nullptr);
      const std::vector<float> got = from_bf16(download<uint16_t>(d_out, want.size()));
      const std::vector<uint8_t> codes = download<uint8_t>(d_out_fp8, want.size());
      size_t code_mismatches = 0, first_mismatch = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        if (codes[i] != cpu::quantize_fp8(got[i], out_scale) && code_mismatches++ == 0) first_mismatch = i;
      }
      EXPECT_EQ(code_mismatches, 0u) << "E4M3 output codes differ from quantize_fp8 of the bf16 output, first at "
                                     << first_mismatch;
      const char* kernel_name = kernel == cuda::DecodeKernel::CudaCores              ? " cuda cores"
                                : kernel == cuda::DecodeKernel::TensorCoresPipelined ? " pipelined"
                                                                                     : "";
      std::string what = "heads " + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) + " head_dim " +
                         std::to_string(c.head_dim) + " block " + std::to_string(c.block_size) + " partitions " +
                         std::to_string(partitions) + kernel_name + (fused_merge ? " fused merge" : "") +
                         (fp8 ? " fp8 cache x" + std::to_string(c.fp8_scale_fraction) : "") +
                         " (element = (row * heads + head) * head_dim + d)";
      EXPECT_TRUE(all_close(got, want, kBf16HalfUlp, 1e-4f * std::fabs(v_scale), what));
    }
  }
  // The verify CTA (one per sequence, KV head, partition for all its rows), when every sequence fits it: the same
  // tolerance and E4M3 codes, both merges, the launch's partition count and a forced one.
  int max_n = 0;
  for (const SeqSpec& spec : c.seqs) max_n = std::max(max_n, spec.n);
  if (cuda::attention_verify_supports(shape, max_n)) {
    std::vector<int32_t> seq_list(c.seqs.size());
    std::iota(seq_list.begin(), seq_list.end(), 0);
    std::shuffle(seq_list.begin(), seq_list.end(), rng);  // any order
    const cuda::DeviceBuffer d_seq_list = upload(seq_list);
    const int verify_partitions =
        cuda::attention_verify_partitions(int(c.seqs.size()), batch.max_kv_len, rows, shape, 132, partial_capacity);
    for (const int parts : {partitions, verify_partitions}) {
      cuda::DeviceBuffer verify_partials(
          std::max<size_t>(size_t(rows) * c.num_heads * parts * cuda::attention_partial_floats(c.head_dim), 1) *
          sizeof(float));
      for (const bool fused_merge : {false, true}) {
        auto d_out = poisoned_bf16(want.size());
        auto d_out_fp8 = upload(std::vector<uint8_t>(want.size(), 0xAB));
        cuda::paged_attention_verify(d_qkv.as<uint16_t>(), q_stride, cache, batch, d_seq_list.as<int32_t>(),
                                     int(seq_list.size()), max_n, shape, parts, verify_partials.as<float>(),
                                     d_out.as<uint16_t>(), nullptr, d_out_fp8.as<uint8_t>(), d_out_scale.as<float>(),
                                     fused_merge ? counters.as<uint32_t>() : nullptr);
        const std::vector<float> got = from_bf16(download<uint16_t>(d_out, want.size()));
        const std::vector<uint8_t> codes = download<uint8_t>(d_out_fp8, want.size());
        size_t code_mismatches = 0;
        for (size_t i = 0; i < got.size(); ++i) code_mismatches += codes[i] != cpu::quantize_fp8(got[i], out_scale);
        EXPECT_EQ(code_mismatches, 0u) << "verify CTA: E4M3 codes differ from quantize_fp8 of the bf16 output";
        const std::string what = "verify CTA heads " + std::to_string(c.num_heads) + "/" +
                                 std::to_string(c.num_kv_heads) + " head_dim " + std::to_string(c.head_dim) +
                                 " block " + std::to_string(c.block_size) + " partitions " + std::to_string(parts) +
                                 (fused_merge ? " fused merge" : "") + (fp8 ? " fp8 cache" : "");
        EXPECT_TRUE(all_close(got, want, kBf16HalfUlp, 1e-4f * std::fabs(v_scale), what));
      }
    }
  }
  const std::vector<uint32_t> rearmed = download<uint32_t>(counters, cuda::attention_merge_counters(rows, shape));
  EXPECT_TRUE(std::all_of(rearmed.begin(), rearmed.end(), [](uint32_t count) { return count == 0; }))
      << "merge counters not re-armed";
}

using AttentionKernel = CudaTest;

TEST_F(AttentionKernel, DecodeMatchesReferenceAcrossContextLengthsAndGqaRatios) {
  std::mt19937 rng(21);
  const std::vector<SeqSpec> decodes = {{0, 1}, {1, 1}, {15, 1}, {16, 1}, {17, 1}, {255, 1}, {1000, 1}, {5000, 1}};
  for (auto [heads, kv_heads, head_dim] : std::vector<std::tuple<int, int, int>>{
           {40, 8, 128}, {8, 2, 64}, {4, 4, 32}, {4, 2, 16}, {16, 1, 128}, {8, 8, 256}, {12, 12, 64}}) {
    run_case({heads, kv_heads, head_dim, 16, decodes}, rng);
  }
}

TEST_F(AttentionKernel, SplitKMergeMatchesReferenceForAnyPartitionCount) {
  std::mt19937 rng(22);
  const std::vector<SeqSpec> seqs = {{3000, 1}, {17, 1}, {700, 2}};  // partitions past the short rows' ends
  // 100: past the fused merge's 64, the merge kernel runs even with counters.
  for (int partitions : {1, 2, 3, 7, 40, 100}) run_case({8, 2, 128, 16, seqs, partitions}, rng);
}

TEST_F(AttentionKernel, PrefillAndChunkedPrefillAreCausal) {
  std::mt19937 rng(23);
  run_case({8, 2, 64, 16, {{0, 37}}}, rng);           // fresh prompt
  run_case({8, 2, 64, 16, {{50, 37}, {0, 1}}}, rng);  // a later chunk over cached blocks
  run_case({4, 4, 32, 8, {{16, 16}, {5, 64}}}, rng);  // chunks starting on and off block boundaries
  run_case({40, 8, 128, 16, {{0, 300}}, 4}, rng);     // split-K inside a prefill
}

TEST_F(AttentionKernel, TreeMaskReplacesCausalAmongNewTokens) {
  std::mt19937 rng(24);
  SeqSpec tree{20, 6, true};
  SeqSpec hidden{0, 3, false, true};
  run_case({8, 2, 64, 16, {tree}}, rng);
  run_case({8, 2, 64, 16, {hidden, tree}}, rng);
}

TEST_F(AttentionKernel, MixedBatchOfPrefillDecodeAndTreeInOneLaunch) {
  std::mt19937 rng(25);
  const std::vector<SeqSpec> seqs = {{0, 33}, {100, 1}, {40, 5, true}, {2000, 1}, {31, 17}};
  run_case({40, 8, 128, 16, seqs}, rng);
  run_case({4, 2, 16, 16, seqs}, rng);
  run_case({4, 2, 16, 16, seqs, 5}, rng);
}

TEST_F(AttentionKernel, CudaCoreKernelMatchesReferenceAtTensorCoreHeadDims) {
  std::mt19937 rng(26);
  const std::vector<SeqSpec> seqs = {{0, 1}, {255, 1}, {1000, 1}, {40, 5, true}, {31, 17}};
  run_case({40, 8, 128, 16, seqs, 0, false}, rng);
  run_case({8, 2, 64, 16, seqs, 3, false}, rng);
}

TEST_F(AttentionKernel, BlockSizesThatSplitA16KeyChunk) {
  // The tensor-core kernel looks one block up per 16-key chunk when block_size is a multiple of 16, per key else.
  std::mt19937 rng(27);
  const std::vector<SeqSpec> seqs = {{0, 1}, {37, 1}, {777, 1}, {20, 6, true}, {9, 23}};
  for (int block_size : {1, 8, 24, 32, 256}) {
    run_case({40, 8, 128, block_size, seqs}, rng);
    run_case({16, 2, 64, block_size, seqs, 5}, rng);
  }
}

TEST_F(AttentionKernel, GraphBucketLongerThanEveryRowSplitsEachRowsOwnKeys) {
  // CUDA-graph decode launches with max_kv_len = the context bucket; every row splits its own keys into the
  // partitions, so partitions past a short row's keys are empty and the merge must weigh them 0.
  std::mt19937 rng(28);
  std::vector<SeqSpec> decodes;
  for (int len : {2399, 2000, 1, 64, 65, 4095, 300, 2400, 1500, 17, 999, 2048}) decodes.push_back({len, 1});
  run_case({40, 8, 128, 16, decodes, 0, true, 4096}, rng);
  run_case({40, 8, 128, 16, decodes, 9, true, 8192}, rng);
  run_case({8, 8, 256, 16, decodes, 0, true, 4096}, rng);
}

// FP8 E4M3 caches (per-tensor k/v scales): the same kernels reading codes and dequantizing in registers, vs
// cpu::attention over the dequantized values (the CPU backend's FP8 cache), so the bf16 tolerance holds.
TEST_F(AttentionKernel, Fp8CacheDecodeSplitKAndGqaMatchTheDequantizedReference) {
  std::mt19937 rng(29);
  const std::vector<SeqSpec> decodes = {{0, 1}, {15, 1}, {17, 1}, {255, 1}, {1000, 1}, {3000, 1}};
  for (auto [heads, kv_heads, head_dim] : std::vector<std::tuple<int, int, int>>{
           {40, 8, 128}, {8, 2, 64}, {4, 4, 32}, {4, 2, 16}, {16, 1, 128}, {8, 8, 256}}) {
    run_case({heads, kv_heads, head_dim, 16, decodes, 0, true, 0, 1.0f}, rng);
  }
  for (int partitions : {1, 3, 40}) run_case({8, 2, 128, 16, decodes, partitions, true, 0, 1.0f}, rng);
  run_case({40, 8, 128, 16, decodes, 0, false, 0, 1.0f}, rng);  // the CUDA-core kernel at head_dim 128
}

TEST_F(AttentionKernel, Fp8CacheSaturatedAndSubnormalCodes) {
  std::mt19937 rng(30);
  const std::vector<SeqSpec> seqs = {{300, 1}, {40, 5, true}, {31, 17}, {2000, 1}};
  for (float fraction : {0.25f, 64.0f}) {
    run_case({40, 8, 128, 16, seqs, 0, true, 0, fraction}, rng);
    run_case({8, 2, 64, 8, seqs, 0, true, 0, fraction}, rng);
    run_case({4, 2, 16, 16, seqs, 0, true, 0, fraction}, rng);
  }
}

TEST_F(AttentionKernel, Fp8CacheTreeMaskPrefillAndGraphBucket) {
  std::mt19937 rng(31);
  SeqSpec tree{20, 6, true};
  SeqSpec hidden{0, 3, false, true};
  run_case({8, 2, 64, 16, {hidden, tree, {0, 37}, {50, 37}}, 0, true, 0, 1.0f}, rng);
  run_case({40, 8, 128, 24, {{0, 33}, {100, 1}, {40, 5, true}, {2000, 1}, {31, 17}}, 0, true, 0, 1.0f}, rng);
  std::vector<SeqSpec> decodes;
  for (int len : {2399, 1, 65, 4095, 300}) decodes.push_back({len, 1});
  run_case({40, 8, 128, 16, decodes, 0, true, 4096, 1.0f}, rng);
}

TEST_F(AttentionKernel, VerifyCtaMatchesReferenceForTreesAndCausalChunksOfOneToEightRows) {
  std::mt19937 rng(29);
  // Verify steps: 1..8 new rows per sequence (tree masks and causal chunks) over short and long prefixes, GQA groups
  // 1..8 (rows x group <= 64), forced partition counts past the shortest rows' keys.
  for (const auto& [heads, kv_heads, head_dim] :
       std::vector<std::array<int, 3>>{{40, 8, 128}, {8, 8, 64}, {16, 2, 128}, {12, 4, 64}, {14, 2, 128}}) {
    const int group = heads / kv_heads;
    std::vector<SeqSpec> seqs;
    for (int n = 1; n <= 8 && n * group <= 64; ++n) {
      seqs.push_back({int(rng() % 1200), n, n % 2 == 0});
      seqs.push_back({int(rng() % 40), n, n % 2 == 1});
    }
    for (const int forced : {0, 1, 7, 40}) {
      for (const float fp8 : {0.0f, 1.0f}) {
        Case c{heads, kv_heads, head_dim, 16, seqs, forced};
        c.fp8_scale_fraction = fp8;
        run_case(c, rng);
      }
    }
  }
}

}  // namespace
}  // namespace qed::testing
