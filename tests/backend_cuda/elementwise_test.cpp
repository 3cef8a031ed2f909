// Embedding gather, RoPE, SiLU-and-mul, KV-cache writes and block copies against the cpu_ops reference on random
// bf16 inputs. The reference runs in fp32 on the same bf16-rounded inputs; the kernels also compute in fp32 and
// round once to bf16, so the bound is half a bf16 ulp (2^-8 relative) plus the fp32 differences of libm
// (cosf/sinf/expf within 2 ulp of fp32, i.e. ~1e-7 relative), covered by a 1e-6 absolute term. Gathers and
// copies must be exact.
#include <numeric>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/kv_cache_kernels.h"
#include "cuda_test_util.h"

namespace qed::testing {
namespace {

using ElementwiseKernels = CudaTest;

TEST_F(ElementwiseKernels, GatherRowsCopiesTheIndexedRowsExactly) {
  std::mt19937 rng(7);
  for (int dim : {8, 64, 896, 5120, 13}) {  // 13: the unvectorised path
    const int vocab = 37, rows = 11;
    const std::vector<float> table = random_bf16_values(size_t(vocab) * dim, rng, 1.0f);
    std::vector<int32_t> ids(rows);
    for (auto& id : ids) id = int32_t(rng() % vocab);
    ids[0] = 0;
    ids[1] = vocab - 1;  // both ends of the table
    std::vector<float> want(size_t(rows) * dim);
    cpu::embedding(table.data(), ids.data(), want.data(), rows, dim);
    auto d_table = upload(to_bf16(table));
    auto d_ids = upload(ids);
    auto d_out = poisoned_bf16(want.size());
    cuda::gather_rows_bf16(d_table.as<uint16_t>(), d_ids.as<int32_t>(), d_out.as<uint16_t>(), rows, dim, nullptr);
    EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_out, want.size())), want, 0.0f, 0.0f,
                          "gather dim=" + std::to_string(dim)));
  }
}

void check_rope(const RopeScaling& scaling, int head_dim, int heads, int extra_stride, std::mt19937& rng) {
  const int rows = 9;
  const int width = heads * head_dim;
  const int stride = width + extra_stride;  // rows inside a wider (fused qkv) row
  std::vector<float> inv_freq(size_t(head_dim / 2));
  cpu::rope_inv_freq(head_dim, 1e6f, scaling, inv_freq.data());
  const std::vector<float> x = random_bf16_values(size_t(rows) * stride, rng, 1.0f);
  // Positions from 0 to past 100k: large angles are where a fast-math sin/cos would fail.
  std::vector<int32_t> positions = {0, 1, 2, 15, 16, 1000, 4500, 32767, 131071};
  std::vector<float> want(size_t(rows) * width);
  for (int r = 0; r < rows; ++r) std::copy_n(x.begin() + r * stride, width, want.begin() + r * width);
  cpu::rope(want.data(), positions.data(), inv_freq.data(), rows, heads, head_dim);

  auto d_x = upload(to_bf16(x));
  auto d_pos = upload(positions);
  auto d_freq = upload(inv_freq);
  cuda::rope_bf16(d_x.as<uint16_t>(), stride, d_pos.as<int32_t>(), d_freq.as<float>(), rows, heads, head_dim, nullptr);
  const std::vector<float> got_all = from_bf16(download<uint16_t>(d_x, x.size()));
  std::vector<float> got(want.size());
  for (int r = 0; r < rows; ++r) {
    std::copy_n(got_all.begin() + r * stride, width, got.begin() + r * width);
    // The columns past the rotated heads are untouched.
    for (int c = width; c < stride; ++c) ASSERT_EQ(got_all[size_t(r) * stride + c], x[size_t(r) * stride + c]);
  }
  // Angles up to 1.3e5 rad: fp32 sin/cos on both sides are within a few ulp of the true value of the same fp32
  // angle, and the fp32 angle itself is identical (same multiply), so only the final bf16 rounding differs.
  EXPECT_TRUE(
      all_close(got, want, kBf16HalfUlp, 1e-6f, "rope " + scaling.type + " head_dim=" + std::to_string(head_dim)));
}

TEST_F(ElementwiseKernels, RopeDefaultMatchesReference) {
  std::mt19937 rng(11);
  for (int head_dim : {16, 32, 64, 128}) check_rope(RopeScaling{}, head_dim, 3, 0, rng);
  check_rope(RopeScaling{}, 128, 48, 16 * 128, rng);  // 40 q + 8 k heads rotated inside a qkv row
}

TEST_F(ElementwiseKernels, RopeLlama3ScalingMatchesReference) {
  std::mt19937 rng(12);
  RopeScaling scaling;
  scaling.type = "llama3";
  scaling.factor = 8.0f;
  scaling.low_freq_factor = 1.0f;
  scaling.high_freq_factor = 4.0f;
  scaling.original_max_position_embeddings = 8192;
  for (int head_dim : {32, 64, 128}) check_rope(scaling, head_dim, 4, 8, rng);
}

TEST_F(ElementwiseKernels, SiluAndMulMatchesReference) {
  std::mt19937 rng(13);
  for (int inter : {8, 160, 13824, 19}) {
    const int rows = 5;
    std::vector<float> gate_up = random_bf16_values(size_t(rows) * 2 * inter, rng, 3.0f);
    gate_up[0] = 80.0f;    // exp(-g) underflows
    gate_up[1] = -100.0f;  // exp(-g) overflows to inf: silu must be -0, not NaN
    std::vector<float> want(size_t(rows) * inter);
    cpu::silu_and_mul(gate_up.data(), want.data(), rows, inter);
    auto d_in = upload(to_bf16(gate_up));
    auto d_out = poisoned_bf16(want.size());
    cuda::silu_and_mul_bf16(d_in.as<uint16_t>(), d_out.as<uint16_t>(), rows, inter, nullptr);
    EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_out, want.size())), want, kBf16HalfUlp, 1e-6f,
                          "silu inter=" + std::to_string(inter)));
  }
}

TEST_F(ElementwiseKernels, WriteKvStoresRowsAtTheirSlotsAndNothingElse) {
  std::mt19937 rng(14);
  const int kv_heads = 2, head_dim = 32, block_size = 16, num_blocks = 6, rows = 21;
  const int kv_dim = kv_heads * head_dim;
  const int stride = 3 * kv_dim;  // q | k | v with q as wide as k here
  const std::vector<float> qkv = random_bf16_values(size_t(rows) * stride, rng, 1.0f);
  const std::vector<int32_t> block_table = {4, 1, 5};
  const int first_slot = 9;  // crosses the block 0 → 1 boundary, ends inside block 2
  std::vector<float> k(size_t(rows) * kv_dim), v(size_t(rows) * kv_dim);
  std::vector<int32_t> slot_mapping(rows);
  for (int r = 0; r < rows; ++r) {
    std::copy_n(qkv.begin() + r * stride + kv_dim, kv_dim, k.begin() + r * kv_dim);
    std::copy_n(qkv.begin() + r * stride + 2 * kv_dim, kv_dim, v.begin() + r * kv_dim);
    const int slot = first_slot + r;
    slot_mapping[r] = block_table[slot / block_size] * block_size + slot % block_size;
  }
  const size_t cache_elems = size_t(num_blocks) * block_size * kv_dim;
  std::vector<float> want_k(cache_elems, 0.5f), want_v(cache_elems, -0.5f);
  cpu::write_kv(cpu::PagedKv{want_k.data(), want_v.data(), block_size, kv_heads, head_dim}, block_table.data(),
                first_slot, k.data(), v.data(), rows);

  auto d_qkv = upload(to_bf16(qkv));
  auto d_k = upload(to_bf16(std::vector<float>(cache_elems, 0.5f)));
  auto d_v = upload(to_bf16(std::vector<float>(cache_elems, -0.5f)));
  auto d_slots = upload(slot_mapping);
  const uint16_t* base = d_qkv.as<uint16_t>();
  cuda::write_kv_bf16(base + kv_dim, base + 2 * kv_dim, stride, d_slots.as<int32_t>(), d_k.as<uint16_t>(),
                      d_v.as<uint16_t>(), rows, kv_dim, nullptr);
  EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_k, cache_elems)), want_k, 0.0f, 0.0f, "k cache"));
  EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_v, cache_elems)), want_v, 0.0f, 0.0f, "v cache"));
}

TEST_F(ElementwiseKernels, CopyKvBlocksCopiesWholeBlocksInEveryLayer) {
  std::mt19937 rng(15);
  const int layers = 3, num_blocks = 5;
  const size_t block_elems = 16 * 64;
  const size_t layer_stride = num_blocks * block_elems;
  const std::vector<float> k = random_bf16_values(layers * layer_stride, rng, 1.0f);
  const std::vector<float> v = random_bf16_values(layers * layer_stride, rng, 1.0f);
  const std::vector<int32_t> pairs = {0, 3, 4, 1, 2, 2};  // (src, dst) pairs, one a no-op
  std::vector<float> want_k = k, want_v = v;
  for (int l = 0; l < layers; ++l) {
    for (size_t p = 0; p < pairs.size(); p += 2) {
      std::copy_n(k.begin() + l * layer_stride + pairs[p] * block_elems, block_elems,
                  want_k.begin() + l * layer_stride + pairs[p + 1] * block_elems);
      std::copy_n(v.begin() + l * layer_stride + pairs[p] * block_elems, block_elems,
                  want_v.begin() + l * layer_stride + pairs[p + 1] * block_elems);
    }
  }
  auto d_k = upload(to_bf16(k));
  auto d_v = upload(to_bf16(v));
  auto d_pairs = upload(pairs);
  cuda::copy_kv_blocks_bf16(d_k.as<uint16_t>(), d_v.as<uint16_t>(), layer_stride, layers, d_pairs.as<int32_t>(),
                            int(pairs.size() / 2), block_elems, nullptr);
  EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_k, k.size())), want_k, 0.0f, 0.0f, "k"));
  EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_v, v.size())), want_v, 0.0f, 0.0f, "v"));
}

// FP8 cache writes: codes bit-identical to cpu::quantize_fp8 of the bf16 K/V (IEEE division by the scale,
// round to nearest even, saturation at 448), every other slot untouched. Scales put values past 448 (saturated)
// and under 2^-6 (subnormal codes) in the test; one source row layout is unaligned (odd q width) for the
// element-wise path.
TEST_F(ElementwiseKernels, WriteKvFp8StoresTheCpuQuantizersCodesAtTheirSlots) {
  std::mt19937 rng(16);
  const int kv_heads = 2, head_dim = 32, block_size = 16, num_blocks = 6, rows = 21;
  const int kv_dim = kv_heads * head_dim;
  for (const int q_width : {kv_dim, kv_dim + 8, kv_dim + 1}) {
    const int stride = q_width + 2 * kv_dim;
    const std::vector<float> qkv = random_bf16_values(size_t(rows) * stride, rng, 4.0f);
    const std::vector<int32_t> block_table = {4, 1, 5};
    const int first_slot = 9;
    const float k_scale = 0.003f, v_scale = 2.0f;  // |k| > 1.35 saturates; |v| < 0.03 gives subnormal codes
    const size_t cache_elems = size_t(num_blocks) * block_size * kv_dim;
    std::vector<uint8_t> want_k(cache_elems, 0x11), want_v(cache_elems, 0x22);
    std::vector<int32_t> slot_mapping(rows);
    for (int r = 0; r < rows; ++r) {
      const int slot = first_slot + r;
      slot_mapping[r] = block_table[slot / block_size] * block_size + slot % block_size;
      for (int i = 0; i < kv_dim; ++i) {
        want_k[size_t(slot_mapping[r]) * kv_dim + i] =
            cpu::quantize_fp8(qkv[size_t(r) * stride + q_width + i], k_scale);
        want_v[size_t(slot_mapping[r]) * kv_dim + i] =
            cpu::quantize_fp8(qkv[size_t(r) * stride + q_width + kv_dim + i], v_scale);
      }
    }
    auto d_qkv = upload(to_bf16(qkv));
    auto d_k = upload(std::vector<uint8_t>(cache_elems, 0x11));
    auto d_v = upload(std::vector<uint8_t>(cache_elems, 0x22));
    auto d_slots = upload(slot_mapping);
    const uint16_t* base = d_qkv.as<uint16_t>();
    cuda::write_kv_fp8(base + q_width, base + q_width + kv_dim, stride, d_slots.as<int32_t>(), d_k.as<uint8_t>(),
                       d_v.as<uint8_t>(), rows, kv_dim, k_scale, v_scale, nullptr);
    EXPECT_EQ(download<uint8_t>(d_k, cache_elems), want_k) << "k codes, q width " << q_width;
    EXPECT_EQ(download<uint8_t>(d_v, cache_elems), want_v) << "v codes, q width " << q_width;
  }
}

// The byte-wise block copy serves FP8 caches (1 byte per element) and block sizes that are no multiple of 16 bytes.
TEST_F(ElementwiseKernels, CopyKvBlocksCopiesFp8BlocksOfAnySize) {
  std::mt19937 rng(17);
  for (const size_t block_bytes : {size_t(16 * 64), size_t(3 * 40 + 1)}) {
    const int layers = 2, num_blocks = 5;
    const size_t layer_stride = num_blocks * block_bytes;
    std::vector<uint8_t> k(layers * layer_stride), v(layers * layer_stride);
    for (uint8_t& x : k) x = uint8_t(rng());
    for (uint8_t& x : v) x = uint8_t(rng());
    const std::vector<int32_t> pairs = {0, 3, 4, 1};
    std::vector<uint8_t> want_k = k, want_v = v;
    for (int l = 0; l < layers; ++l) {
      for (size_t p = 0; p < pairs.size(); p += 2) {
        std::copy_n(k.begin() + l * layer_stride + pairs[p] * block_bytes, block_bytes,
                    want_k.begin() + l * layer_stride + pairs[p + 1] * block_bytes);
        std::copy_n(v.begin() + l * layer_stride + pairs[p] * block_bytes, block_bytes,
                    want_v.begin() + l * layer_stride + pairs[p + 1] * block_bytes);
      }
    }
    auto d_k = upload(k);
    auto d_v = upload(v);
    auto d_pairs = upload(pairs);
    cuda::copy_kv_blocks(d_k.data(), d_v.data(), layer_stride, layers, d_pairs.as<int32_t>(), int(pairs.size() / 2),
                         block_bytes, nullptr);
    EXPECT_EQ(download<uint8_t>(d_k, k.size()), want_k) << "block bytes " << block_bytes;
    EXPECT_EQ(download<uint8_t>(d_v, v.size()), want_v) << "block bytes " << block_bytes;
  }
}

}  // namespace
}  // namespace qed::testing
