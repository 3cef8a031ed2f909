// The CUDA backend's split of a step between the prefill attention kernel (long causal chunks) and the
// flash-decoding kernel (decode rows, short chunks, tree masks), end to end against the CPU backend. The HF fixtures
// have head dims 16/32, which the prefill kernel does not serve, so this writes a small random Qwen2 checkpoint
// with head_dim 128 (GQA 4). Bound: CudaParity's 5% of the logit scale (bf16 activations vs fp32); the same steps
// with the prefill kernel switched off are checked too, and both measured differences are printed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "../model/temp_dir.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#include "backend_test_util.h"
#include "core/dtype.h"
#include "model/safetensors.h"

namespace qed::testing {
namespace {

constexpr int kHidden = 512, kHeads = 4, kKvHeads = 1, kHeadDim = 128, kInter = 512, kVocab = 256, kLayers = 2;

// Weights large enough that attention is far from uniform (scores of std ~1.5), so a wrong key or row shows.
// kv_scale > 0 adds self_attn.k_scale / v_scale of that value to every layer (an FP8 KV cache on both backends).
void write_checkpoint(const test::TempDir& dir, float kv_scale = 0.0f) {
  dir.write("config.json", R"({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 512,
    "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 128,
    "num_hidden_layers": 2, "vocab_size": 256, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "tie_word_embeddings": false, "hidden_act": "silu"})");
  std::mt19937 rng(41);
  std::vector<std::vector<uint16_t>> storage;
  std::vector<TensorToWrite> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float stddev, float mean = 0.0f) {
    size_t count = 1;
    for (int64_t d : shape) count *= size_t(d);
    std::normal_distribution<float> dist(mean, stddev);
    std::vector<uint16_t> values(count);
    for (uint16_t& v : values) v = float_to_bf16(stddev == 0.0f ? mean : dist(rng));
    storage.push_back(std::move(values));
    tensors.push_back({name, DType::BF16, std::move(shape), storage.back().data()});
  };
  storage.reserve(64);
  const float proj = 1.2f / std::sqrt(float(kHidden));
  add("model.embed_tokens.weight", {kVocab, kHidden}, 1.0f);
  add("lm_head.weight", {kVocab, kHidden}, 1.0f / std::sqrt(float(kHidden)));
  add("model.norm.weight", {kHidden}, 0.0f, 1.0f);
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {kHidden}, 0.0f, 1.0f);
    add(p + "post_attention_layernorm.weight", {kHidden}, 0.0f, 1.0f);
    add(p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}, proj);
    add(p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}, proj);
    add(p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}, proj);
    add(p + "self_attn.q_proj.bias", {kHeads * kHeadDim}, 0.1f);
    add(p + "self_attn.k_proj.bias", {kKvHeads * kHeadDim}, 0.1f);
    add(p + "self_attn.v_proj.bias", {kKvHeads * kHeadDim}, 0.1f);
    add(p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}, 1.0f / std::sqrt(float(kHeads * kHeadDim)));
    add(p + "mlp.gate_proj.weight", {kInter, kHidden}, 1.0f / std::sqrt(float(kHidden)));
    add(p + "mlp.up_proj.weight", {kInter, kHidden}, 1.0f / std::sqrt(float(kHidden)));
    add(p + "mlp.down_proj.weight", {kHidden, kInter}, 1.0f / std::sqrt(float(kInter)));
    if (kv_scale > 0.0f) {
      tensors.push_back({p + "self_attn.k_scale", DType::F32, {}, &kv_scale});
      tensors.push_back({p + "self_attn.v_scale", DType::F32, {}, &kv_scale});
    }
  }
  write_safetensors(dir.file("model.safetensors"), tensors, {{"format", "pt"}});
}

std::vector<int32_t> tokens(size_t n, std::mt19937& rng) {
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = int32_t(rng() % kVocab);
  return ids;
}

// Two steps over three sequences: fresh prompts of 150 (3 tiles), 20 (1 tile) and 5 tokens (decode kernel); then a
// 70-token chunk over the 150 cached (prefill tiles), a decode row, and a tree-masked chunk of 3. Block tables are
// permuted. Returns the logits of every row of both steps.
std::vector<float> run_steps(Backend& backend) {
  std::mt19937 rng(42);
  const std::vector<int32_t> a = tokens(220, rng), b = tokens(21, rng), c = tokens(8, rng);
  const std::vector<int32_t> table_a = {13, 2, 7, 0, 11, 4, 9, 1, 12, 3, 8, 5, 10, 6}, table_b = {20, 17},
                             table_c = {30};
  auto chunk = [](const std::vector<int32_t>& ids, int begin, int end, const std::vector<int32_t>& table) {
    SequenceChunk seq;
    seq.tokens.assign(ids.begin() + begin, ids.begin() + end);
    seq.num_cached = begin;
    seq.block_table = table;
    seq.logits_indices = all_indices(size_t(end - begin));
    return seq;
  };
  std::vector<float> logits;
  ForwardBatch first;
  first.sequences = {chunk(a, 0, 150, table_a), chunk(b, 0, 20, table_b), chunk(c, 0, 5, table_c)};
  ForwardResult result;
  backend.forward(first, result);
  logits.insert(logits.end(), result.logits.begin(), result.logits.end());
  ForwardBatch second;
  SequenceChunk tree = chunk(c, 5, 8, table_c);
  tree.positions = {5, 6, 5};
  tree.attention_mask = {1, 0, 0, 1, 1, 0, 0, 0, 1};
  second.sequences = {chunk(a, 150, 220, table_a), chunk(b, 20, 21, table_b), tree};
  backend.forward(second, result);
  logits.insert(logits.end(), result.logits.begin(), result.logits.end());
  return logits;
}

TEST(CudaPrefillDispatch, MixedStepsMatchCpuWithAndWithoutThePrefillKernel) {
  if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  test::TempDir dir;
  write_checkpoint(dir);
  CpuBackendOptions cpu_options;
  cpu_options.num_threads = 4;
  cpu_options.num_blocks = 64;
  auto cpu = CpuBackend::load(dir.path(), cpu_options);
  const std::vector<float> want = run_steps(*cpu);
  const float scale = std::max(1.0f, max_abs(want));
  for (int min_rows : {16, 0}) {
    CudaBackendOptions options;
    options.num_blocks = 64;
    options.max_batched_tokens = 512;
    options.prefill_attention_min_rows = min_rows;
    auto cuda = CudaBackend::load(dir.path(), options);
    const std::vector<float> got = run_steps(*cuda);
    ASSERT_EQ(got.size(), want.size());
    const float diff = max_abs_diff(got, want);
    std::printf("[ prefill dispatch ] min_rows %d: max|diff| vs CPU %.3g, scale %.3g\n", min_rows, double(diff),
                double(scale));
    for (float x : got) ASSERT_TRUE(std::isfinite(x)) << "min_rows " << min_rows;
    EXPECT_LE(diff, 5e-2f * scale) << "min_rows " << min_rows;
  }
}

// The same steps with an FP8 KV cache (k/v scales in the checkpoint: auto picks FP8 on CUDA, the CPU backend fake-
// quantizes): the prefill kernel's code-to-bf16 loads, the decode kernel's fp16 MMAs and the tree mask over E4M3
// codes. The CUDA forward quantizes bf16-rounded K/V where the CPU quantizes fp32 ones, so a few percent of the
// codes land one E4M3 step apart: the bound is the bf16 one or twice the cache's own quantization noise (the CPU's
// FP8 vs fp32 cache), whichever is larger; the measured numbers are printed.
TEST(CudaPrefillDispatch, Fp8KvCacheMixedStepsMatchCpuWithAndWithoutThePrefillKernel) {
  if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  test::TempDir dir, plain;
  write_checkpoint(dir, 6.0f / 448.0f);  // |K|, |V| reach ~5 here: a calibrated scale with a little headroom
  write_checkpoint(plain);
  CpuBackendOptions cpu_options;
  cpu_options.num_threads = 4;
  cpu_options.num_blocks = 64;
  const std::vector<float> want = run_steps(*CpuBackend::load(dir.path(), cpu_options));
  const std::vector<float> unquantized = run_steps(*CpuBackend::load(plain.path(), cpu_options));
  const float scale = std::max(1.0f, max_abs(want)), noise = max_abs_diff(want, unquantized);
  for (int min_rows : {16, 0}) {
    CudaBackendOptions options;
    options.num_blocks = 64;
    options.max_batched_tokens = 512;
    options.prefill_attention_min_rows = min_rows;
    auto cuda = CudaBackend::load(dir.path(), options);
    ASSERT_TRUE(cuda->kv_cache_fp8());
    const std::vector<float> got = run_steps(*cuda);
    ASSERT_EQ(got.size(), want.size());
    const float diff = max_abs_diff(got, want);
    std::printf("[ prefill dispatch fp8 kv ] min_rows %d: max|diff| vs CPU %.3g, scale %.3g, CPU fp8 vs fp32 %.3g\n",
                min_rows, double(diff), double(scale), double(noise));
    for (float x : got) ASSERT_TRUE(std::isfinite(x)) << "min_rows " << min_rows;
    EXPECT_LE(diff, std::max(5e-2f * scale, 2.0f * noise)) << "min_rows " << min_rows;
  }
  EXPECT_GT(noise, 0.0f) << "the CPU's FP8 cache changed nothing";
}

}  // namespace
}  // namespace qed::testing
