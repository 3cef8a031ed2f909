// The fused RoPE + paged KV write (kv_cache_kernels.h rope_write_kv) against the two kernels it replaces, rope_bf16
// then write_kv_bf16 / write_kv_fp8, run on the same input: the rotated qkv rows and both caches must be
// bit-identical. And against the CPU: q and k rotated within half a bf16 ulp of cpu::rope (the bound of the rope
// test), every cache slot of a row equal to cpu::write_kv of the kernel's own rotated k and the untouched v (bf16
// cache: exact copies; FP8: cpu::quantize_fp8's codes), every other slot unchanged.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/quant_ops.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/kv_cache_kernels.h"
#include "cuda_test_util.h"

namespace qed::testing {
namespace {

struct RopeKvCase {
  int num_heads, num_kv_heads, head_dim, rows;
  bool fp8;
};

void check_rope_write_kv(const RopeKvCase& c, std::mt19937& rng) {
  const int q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const int stride = q_dim + 2 * kv_dim;
  const int block_size = 16, num_blocks = (c.rows + 40) / block_size + 2;
  std::vector<float> inv_freq(size_t(c.head_dim / 2));
  cpu::rope_inv_freq(c.head_dim, 1e6f, RopeScaling{}, inv_freq.data());
  const std::vector<float> qkv = random_bf16_values(size_t(c.rows) * stride, rng, 4.0f);
  // Positions up to past 100k (large angles), slots spread over shuffled blocks.
  std::vector<int32_t> positions(size_t(c.rows)), slots(size_t(c.rows));
  std::vector<int32_t> blocks(static_cast<size_t>(num_blocks));
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), rng);
  for (int r = 0; r < c.rows; ++r) {
    positions[size_t(r)] = r % 3 == 0 ? 131071 - r : 25 + r;
    const int s = 25 + r;  // logical slot
    slots[size_t(r)] = blocks[size_t(s / block_size)] * block_size + s % block_size;
  }
  const float k_scale = 0.003f, v_scale = 2.0f;  // saturated and subnormal codes
  const size_t cache_elems = size_t(num_blocks) * block_size * kv_dim, elem = c.fp8 ? 1 : 2;
  std::vector<uint8_t> cache_init(cache_elems * elem);
  for (uint8_t& b : cache_init) b = uint8_t(rng() & 0x3F);  // finite bf16 bits and FP8 codes

  auto d_pos = upload(positions);
  auto d_freq = upload(inv_freq);
  auto d_slots = upload(slots);
  // The two old kernels.
  auto d_old = upload(to_bf16(qkv));
  auto d_old_k = upload(cache_init), d_old_v = upload(cache_init);
  cuda::rope_bf16(d_old.as<uint16_t>(), stride, d_pos.as<int32_t>(), d_freq.as<float>(), c.rows,
                  c.num_heads + c.num_kv_heads, c.head_dim, nullptr);
  const uint16_t* old_base = d_old.as<uint16_t>();
  if (c.fp8) {
    cuda::write_kv_fp8(old_base + q_dim, old_base + q_dim + kv_dim, stride, d_slots.as<int32_t>(),
                       d_old_k.as<uint8_t>(), d_old_v.as<uint8_t>(), c.rows, kv_dim, k_scale, v_scale, nullptr);
  } else {
    cuda::write_kv_bf16(old_base + q_dim, old_base + q_dim + kv_dim, stride, d_slots.as<int32_t>(),
                        d_old_k.as<uint16_t>(), d_old_v.as<uint16_t>(), c.rows, kv_dim, nullptr);
  }
  // The fused one.
  auto d_new = upload(to_bf16(qkv));
  auto d_new_k = upload(cache_init), d_new_v = upload(cache_init);
  const cuda::KvCacheTarget target{d_new_k.data(), d_new_v.data(), c.fp8, c.fp8 ? k_scale : 1.0f,
                                   c.fp8 ? v_scale : 1.0f};
  cuda::rope_write_kv(d_new.as<uint16_t>(), stride, d_pos.as<int32_t>(), d_freq.as<float>(), d_slots.as<int32_t>(),
                      target, c.rows, c.num_heads, c.num_kv_heads, c.head_dim, nullptr);

  const std::string what = "heads " + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) +
                           " head_dim " + std::to_string(c.head_dim) + (c.fp8 ? " fp8" : " bf16");
  const auto new_rows = download<uint16_t>(d_new, qkv.size());
  const auto new_k = download<uint8_t>(d_new_k, cache_init.size());
  const auto new_v = download<uint8_t>(d_new_v, cache_init.size());
  EXPECT_EQ(new_rows, download<uint16_t>(d_old, qkv.size())) << what << ": qkv rows";
  EXPECT_EQ(new_k, download<uint8_t>(d_old_k, cache_init.size())) << what << ": k cache";
  EXPECT_EQ(new_v, download<uint8_t>(d_old_v, cache_init.size())) << what << ": v cache";

  // CPU: q and k rotation.
  const int rotated = q_dim + kv_dim;
  std::vector<float> want(size_t(c.rows) * rotated), got(want.size());
  const std::vector<float> got_all = from_bf16(new_rows);
  for (int r = 0; r < c.rows; ++r) {
    std::copy_n(qkv.begin() + size_t(r) * stride, rotated, want.begin() + size_t(r) * rotated);
    std::copy_n(got_all.begin() + size_t(r) * stride, rotated, got.begin() + size_t(r) * rotated);
    for (int i = rotated; i < stride; ++i) {
      ASSERT_EQ(got_all[size_t(r) * stride + i], qkv[size_t(r) * stride + i]) << what << ": v changed";
    }
  }
  cpu::rope(want.data(), positions.data(), inv_freq.data(), c.rows, c.num_heads + c.num_kv_heads, c.head_dim);
  EXPECT_TRUE(all_close(got, want, kBf16HalfUlp, 1e-6f, what + " rotation"));
  // CPU: the cache rows.
  std::vector<uint8_t> want_k = cache_init, want_v = cache_init;
  for (int r = 0; r < c.rows; ++r) {
    const size_t slot = size_t(slots[size_t(r)]);
    for (int i = 0; i < kv_dim; ++i) {
      const uint16_t k_bits = new_rows[size_t(r) * stride + q_dim + i];
      const uint16_t v_bits = new_rows[size_t(r) * stride + q_dim + kv_dim + i];
      const size_t at = slot * kv_dim + size_t(i);
      if (c.fp8) {
        want_k[at] = cpu::quantize_fp8(bf16_to_float(k_bits), k_scale);
        want_v[at] = cpu::quantize_fp8(bf16_to_float(v_bits), v_scale);
      } else {
        std::memcpy(&want_k[2 * at], &k_bits, 2);
        std::memcpy(&want_v[2 * at], &v_bits, 2);
      }
    }
  }
  EXPECT_EQ(new_k, want_k) << what << ": k cache vs cpu";
  EXPECT_EQ(new_v, want_v) << what << ": v cache vs cpu";
}

using RopeWriteKv = CudaTest;

TEST_F(RopeWriteKv, BitIdenticalToRopeThenWriteKvAndMatchesTheCpu) {
  std::mt19937 rng(21);
  for (const bool fp8 : {false, true}) {
    check_rope_write_kv({40, 8, 128, 3, fp8}, rng);  // the 14B shape at decode
    check_rope_write_kv({4, 2, 64, 21, fp8}, rng);
    check_rope_write_kv({7, 1, 32, 5, fp8}, rng);  // a head group split across CTAs, odd head counts
    check_rope_write_kv({2, 2, 16, 4, fp8}, rng);
  }
}

}  // namespace
}  // namespace qed::testing
