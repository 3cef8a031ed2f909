// Tensor parallelism on the CPU: the sharding plan (which rank holds which slice), and the exact simulation of N
// ranks (TpSimulatedCpuBackend) against the unsharded CpuBackend on the HF fixtures, bf16 and quantized.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../model/temp_dir.h"
#include "backend/tp/rank_threads.h"
#include "backend/tp/shard_plan.h"
#include "backend/tp/tp_cpu_backend.h"
#include "backend_test_util.h"
#include "core/error.h"
#include "model/weights.h"
#include "quant/calibration.h"
#include "quant/quantized_checkpoint.h"

namespace qed::testing {
namespace {

// Reassociation only: the ranks' partial sums of o_proj/down_proj (and the lm_head split, which is exact per
// column) against one sum. Each partial is an fp32 dot product of q_dim/N or inter/N terms with the same 8-lane
// accumulation, then N partials are added: a few ulps of the largest partial per element, which 2-3 residual
// layers carry to the logits. Measured on the fixtures (2026-12-02): max |diff| / max |logit| <= 9e-7 for N = 2, 4
// (bf16 and quantized). The bound keeps 5x headroom and stays three orders below what a wrong slice gives (a head's K
// paired with another head's Q, a bias added twice, a dropped rank: 1e-2 and more).
constexpr float kRelativeTolerance = 5e-6f;

std::string fixture_dir(const std::string& name) {
  return std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name;
}

CpuBackendOptions small_options() {
  CpuBackendOptions options;
  options.num_threads = 2;
  options.num_blocks = 64;
  return options;
}

ModelConfig shape(int heads, int kv_heads, int hidden, int inter, int vocab) {
  ModelConfig c;
  c.hidden_size = hidden;
  c.num_layers = 1;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.intermediate_size = inter;
  c.vocab_size = vocab;
  c.max_position_embeddings = 4096;
  return c;
}

std::string error_of(const ModelConfig& config, int ranks) {
  try {
    tp::ShardPlan::make(config, ranks);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The reference shape of the issue (Qwen2.5-14B) at TP = 2, and the limits of splitting it.
TEST(ShardPlan, Qwen14bShape) {
  const ModelConfig c = shape(40, 8, 5120, 13824, 152064);
  const tp::ShardPlan two = tp::ShardPlan::make(c, 2);
  ASSERT_EQ(two.slices.size(), 2u);
  EXPECT_FALSE(two.kv_replicated);
  EXPECT_EQ(two.vocab_shard, 76032);
  const tp::RankSlice& r1 = two.slices[1];
  EXPECT_EQ(r1.q_head_begin, 20);
  EXPECT_EQ(r1.q_heads, 20);
  EXPECT_EQ(r1.kv_head_begin, 4);
  EXPECT_EQ(r1.kv_heads, 4);
  EXPECT_EQ(r1.inter_begin, 6912);
  EXPECT_EQ(r1.inter, 6912);
  EXPECT_EQ(r1.vocab_begin, 76032);
  EXPECT_EQ(r1.vocab, 76032);
  // TP = 8: one KV head per rank, still split; TP = 40 would replicate; 16 and 3 do not divide the 40 heads.
  const tp::ShardPlan eight = tp::ShardPlan::make(c, 8);
  EXPECT_FALSE(eight.kv_replicated);
  EXPECT_EQ(eight.slices[7].kv_head_begin, 7);
  EXPECT_EQ(eight.slices[7].kv_heads, 1);
  const std::string bad = error_of(c, 16);
  EXPECT_NE(bad.find("40 attention heads do not split over 16 ranks"), std::string::npos) << bad;
  EXPECT_EQ(bad.find('\n'), std::string::npos);
  EXPECT_NE(error_of(c, 3), "");
  EXPECT_NE(error_of(c, 0), "");
}

TEST(ShardPlan, KvHeadsReplicatedWhenRanksExceedThem) {
  // 28 q heads, 4 KV heads (Qwen2.5-7B) over 4 ranks: split; over 7: neither 4 % 7 nor 7 % 4, refused; 14 heads,
  // 2 KV heads over 7 ranks is refused too, over 14 replicated (ranks 0..6 read KV head 0, 7..13 KV head 1).
  EXPECT_FALSE(tp::ShardPlan::make(shape(28, 4, 3584, 18944, 152064), 4).kv_replicated);
  EXPECT_NE(error_of(shape(28, 4, 3584, 18944, 152064), 7).find("KV heads"), std::string::npos);
  const tp::ShardPlan p = tp::ShardPlan::make(shape(14, 2, 896, 4900, 151936), 14);
  EXPECT_TRUE(p.kv_replicated);
  for (int r = 0; r < 14; ++r) {
    EXPECT_EQ(p.slices[size_t(r)].kv_heads, 1);
    EXPECT_EQ(p.slices[size_t(r)].kv_head_begin, r / 7) << "rank " << r;
  }
  // Every q head reads the KV head its rank holds: q head h reads h / (heads / kv).
  for (const tp::RankSlice& s : p.slices) EXPECT_EQ(s.q_head_begin / 7, s.kv_head_begin);
  EXPECT_NE(error_of(shape(14, 2, 896, 4900, 151936), 4).find("14 attention heads"), std::string::npos);
}

TEST(ShardPlan, VocabShardsPadAndCoverTheVocabOnce) {
  const tp::ShardPlan p = tp::ShardPlan::make(shape(4, 2, 64, 160, 1001), 4);
  EXPECT_EQ(p.vocab_shard, 256);  // ceil(1001 / 4) = 251, padded to 16
  int covered = 0;
  for (const tp::RankSlice& s : p.slices) {
    EXPECT_EQ(s.vocab_begin, covered);
    covered += s.vocab;
  }
  EXPECT_EQ(covered, 1001);
  EXPECT_EQ(p.slices[3].vocab, 1001 - 3 * 256);
}

// The values of a (possibly sliced) tensor, as float.
std::vector<float> values(const TensorInfo& t) {
  return tensor_to_f32(t);
}

TEST(RankShard, SlicesAreTheRanksRowsAndColumns) {
  const std::string dir = fixture_dir("qwen2_gqa_bias");  // 4 heads, 2 KV heads, head_dim 16, inter 160
  const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
  const Checkpoint whole = Checkpoint::open(dir);
  const tp::ShardPlan plan = tp::ShardPlan::make(config, 2);
  const int hd = config.head_dim, hidden = config.hidden_size;
  std::vector<float> o_rebuilt(size_t(hidden) * config.num_heads * hd);
  for (int r = 0; r < 2; ++r) {
    const tp::RankShard shard = tp::make_rank_shard(whole, config, plan, r);
    EXPECT_EQ(shard.config.num_heads, 2);
    EXPECT_EQ(shard.config.num_kv_heads, 1);
    EXPECT_EQ(shard.config.intermediate_size, 80);
    // k_proj rows of the rank's KV head, bias too.
    const std::vector<float> k_all = values(whole.get("model.layers.1.self_attn.k_proj.weight"));
    const std::vector<float> k = values(shard.checkpoint.get("model.layers.1.self_attn.k_proj.weight"));
    ASSERT_EQ(k.size(), size_t(hd) * hidden);
    EXPECT_EQ(0, std::memcmp(k.data(), k_all.data() + size_t(r) * hd * hidden, k.size() * sizeof(float)));
    const std::vector<float> kb_all = values(whole.get("model.layers.1.self_attn.k_proj.bias"));
    const std::vector<float> kb = values(shard.checkpoint.get("model.layers.1.self_attn.k_proj.bias"));
    EXPECT_EQ(0, std::memcmp(kb.data(), kb_all.data() + size_t(r) * hd, kb.size() * sizeof(float)));
    // o_proj: the input columns of the rank's q heads; the ranks' columns side by side are the whole matrix.
    const std::vector<float> o = values(shard.checkpoint.get("model.layers.0.self_attn.o_proj.weight"));
    const int cols = 2 * hd;
    for (int row = 0; row < hidden; ++row) {
      for (int c = 0; c < cols; ++c) {
        o_rebuilt[size_t(row) * 4 * hd + size_t(r) * cols + c] = o[size_t(row) * cols + c];
      }
    }
    // The lm_head slice (untied here) carries the rank's vocab rows.
    const TensorInfo& head = shard.checkpoint.get(tp::kLmHeadShardName);
    EXPECT_EQ(head.shape, (std::vector<int64_t>{plan.vocab_shard, hidden}));
  }
  EXPECT_EQ(o_rebuilt, values(whole.get("model.layers.0.self_attn.o_proj.weight")));
}

TEST(RankShard, RowParallelBiasOnRankZeroOnlyAndPaddingIsZero) {
  // llama3_rope_scaled has no biases; build a checkpoint that has them (attention_bias and mlp_bias on).
  test::TempDir tmp;
  const std::string src = fixture_dir("llama3_rope_scaled");
  ModelConfig config = ModelConfig::from_file(src + "/config.json");
  const Checkpoint base = Checkpoint::open(src);
  std::vector<std::vector<float>> owned;
  std::vector<TensorToWrite> tensors;
  for (const std::string& name : base.names()) {
    const TensorInfo& t = base.get(name);
    tensors.push_back({name, t.dtype, t.shape, t.data});
  }
  for (int l = 0; l < config.num_layers; ++l) {
    for (const auto& [suffix, n] :
         std::vector<std::pair<std::string, int>>{{"self_attn.q_proj.bias", config.num_heads * config.head_dim},
                                                  {"self_attn.k_proj.bias", config.num_kv_heads * config.head_dim},
                                                  {"self_attn.v_proj.bias", config.num_kv_heads * config.head_dim},
                                                  {"self_attn.o_proj.bias", config.hidden_size},
                                                  {"mlp.gate_proj.bias", config.intermediate_size},
                                                  {"mlp.up_proj.bias", config.intermediate_size},
                                                  {"mlp.down_proj.bias", config.hidden_size}}) {
      std::vector<float>& b = owned.emplace_back(size_t(n));
      for (int i = 0; i < n; ++i) b[size_t(i)] = 0.01f * float((i * 7 + l * 3) % 11) - 0.05f;
      tensors.push_back({layer_tensor_name(l, suffix), DType::F32, {n}, b.data()});
    }
  }
  write_safetensors(tmp.file("model.safetensors"), tensors);
  config.attention_bias = true;
  config.mlp_bias = true;
  const Checkpoint biased = Checkpoint::open(tmp.path());
  const tp::ShardPlan plan = tp::ShardPlan::make(config, 2);
  for (int r = 0; r < 2; ++r) {
    const tp::RankShard shard = tp::make_rank_shard(biased, config, plan, r);
    for (const char* suffix : {"self_attn.o_proj.bias", "mlp.down_proj.bias"}) {
      const std::vector<float> b = values(shard.checkpoint.get(layer_tensor_name(1, suffix)));
      const std::vector<float> full = values(biased.get(layer_tensor_name(1, suffix)));
      EXPECT_EQ(b, r == 0 ? full : std::vector<float>(full.size(), 0.0f)) << suffix << " rank " << r;
    }
  }

  // And the simulation with those biases (Llama: q/k/v/o and MLP biases) matches the unsharded model.
  CpuBackend reference(config, biased, small_options());
  tp::TpSimulatedCpuBackend sharded(config, biased, 2, small_options());
  const std::vector<int32_t> ids = {3, 100, 7, 512, 42, 9, 600, 1, 77};
  const std::vector<float> want = prefill_logits(reference, ids), got = prefill_logits(sharded, ids);
  EXPECT_LE(max_abs_diff(want, got), kRelativeTolerance * std::max(1.0f, max_abs(want)));
}

struct TpCase {
  std::string fixture;
  int ranks;
};

class TpSimulation : public ::testing::TestWithParam<TpCase> {};

TEST_P(TpSimulation, LogitsMatchUnshardedAndHf) {
  const TpCase& param = GetParam();
  const HfFixture fixture = load_hf_fixture(param.fixture);
  auto reference = load_fixture_backend(param.fixture);
  auto sharded = tp::TpSimulatedCpuBackend::load(fixture_dir(param.fixture), param.ranks, small_options());
  for (size_t p = 0; p < fixture.prompts.size(); ++p) {
    const HfPrompt& prompt = fixture.prompts[p];
    const std::vector<float> want = prefill_logits(*reference, prompt.ids);
    const std::vector<float> got = prefill_logits(*sharded, prompt.ids);
    ASSERT_EQ(got.size(), want.size());
    const float diff = max_abs_diff(got, want);
    const float scale = std::max(1.0f, max_abs(want));
    std::printf("[ tp ] %s N=%d prompt %zu: max |diff| vs unsharded %.3g (max |logit| %.3g), vs HF %.3g\n",
                fixture.name.c_str(), param.ranks, p, double(diff), double(scale),
                double(max_abs_diff(got, prompt.logits)));
    if (param.ranks == 1) {
      EXPECT_EQ(diff, 0.0f) << "one rank is the unsharded computation";
    } else {
      EXPECT_LE(diff, kRelativeTolerance * scale) << "prompt " << p;
    }
    EXPECT_LE(max_abs_diff(got, prompt.logits), 2e-5f * std::max(1.0f, max_abs(prompt.logits)));
  }
}

TEST_P(TpSimulation, GreedyContinuationIdentical) {
  const TpCase& param = GetParam();
  const HfFixture fixture = load_hf_fixture(param.fixture);
  auto sharded = tp::TpSimulatedCpuBackend::load(fixture_dir(param.fixture), param.ranks, small_options());
  const int block_size = sharded->kv_layout().block_size;
  for (const HfPrompt& prompt : fixture.prompts) {
    SequenceChunk chunk;
    chunk.tokens = prompt.ids;
    std::vector<int32_t> generated;
    ForwardResult result;
    while (generated.size() < prompt.greedy.size()) {
      const size_t slots = size_t(chunk.num_cached) + chunk.tokens.size();
      chunk.block_table = iota_blocks(0, int((slots + size_t(block_size) - 1) / size_t(block_size)));
      ForwardBatch batch;
      batch.sequences.push_back(chunk);
      sharded->forward(batch, result);
      ASSERT_EQ(result.rows, 1);
      const float* row = result.logits.data();
      const int32_t token = int32_t(std::max_element(row, row + fixture.vocab) - row);
      generated.push_back(token);
      chunk.num_cached += int32_t(chunk.tokens.size());
      chunk.tokens = {token};
    }
    // HF's greedy continuation, which the unsharded CpuBackend reproduces (hf_fidelity_test).
    EXPECT_EQ(generated, prompt.greedy) << fixture.name << " N=" << param.ranks;
  }
}

// A batch as speculative decoding sends it: a decode row, a tree of draft candidates with repeated positions and
// an ancestor mask on top of a cached prefix, a fresh prefill; hidden states wanted (the ReDrafter input), and a
// copy-on-write block copy in between.
TEST_P(TpSimulation, TreeMaskedMixedBatchMatchesUnsharded) {
  const TpCase& param = GetParam();
  auto reference = load_fixture_backend(param.fixture);
  auto sharded = tp::TpSimulatedCpuBackend::load(fixture_dir(param.fixture), param.ranks, small_options());
  for (Backend* backend : {static_cast<Backend*>(reference.get()), static_cast<Backend*>(sharded.get())}) {
    ForwardBatch prefill;
    SequenceChunk& a = prefill.sequences.emplace_back();
    a.tokens = {5, 17, 99, 3, 250, 8, 61, 200, 11, 4, 90, 33, 7, 18, 2, 140, 66, 1};  // 18 tokens: 2 blocks
    a.block_table = {0, 1};
    ForwardResult ignored;
    backend->forward(prefill, ignored);
    const std::vector<std::pair<int32_t, int32_t>> fork = {{1, 5}};
    backend->copy_kv_blocks(fork);
  }
  ForwardBatch batch;
  batch.want_hidden = true;
  SequenceChunk& decode = batch.sequences.emplace_back();
  decode.tokens = {77};
  decode.num_cached = 18;
  decode.block_table = {0, 1};
  SequenceChunk& tree = batch.sequences.emplace_back();  // the fork: root 12, children 40 and 41, grandchild 9
  tree.tokens = {12, 40, 41, 9};
  tree.num_cached = 18;
  tree.positions = {18, 19, 19, 20};
  tree.block_table = {0, 5};
  tree.attention_mask = {1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1};
  tree.logits_indices = {0, 1, 2, 3};
  SequenceChunk& fresh = batch.sequences.emplace_back();
  fresh.tokens = {300, 301, 302, 9, 10};
  fresh.block_table = {8};
  fresh.logits_indices = {2, 4};
  ForwardResult want, got;
  reference->forward(batch, want);
  sharded->forward(batch, got);
  ASSERT_EQ(got.rows, 7);
  ASSERT_EQ(want.rows, got.rows);
  const float scale = std::max(1.0f, max_abs(want.logits));
  const float tolerance = param.ranks == 1 ? 0.0f : kRelativeTolerance * scale;
  EXPECT_LE(max_abs_diff(got.logits, want.logits), tolerance);
  ASSERT_EQ(got.hidden.size(), want.hidden.size());
  EXPECT_LE(max_abs_diff(got.hidden, want.hidden), param.ranks == 1 ? 0.0f : kRelativeTolerance * max_abs(want.hidden));
}

// The HF fixtures: qwen2_gqa_bias and llama3_rope_scaled have 4 heads over 2 KV heads (N = 4 replicates them),
// qwen2_tied_mha 4 KV heads (N = 4 splits them) and a tied lm_head.
INSTANTIATE_TEST_SUITE_P(Fixtures, TpSimulation,
                         ::testing::Values(TpCase{"qwen2_gqa_bias", 1}, TpCase{"qwen2_gqa_bias", 2},
                                           TpCase{"qwen2_gqa_bias", 4}, TpCase{"qwen2_tied_mha", 2},
                                           TpCase{"qwen2_tied_mha", 4}, TpCase{"llama3_rope_scaled", 1},
                                           TpCase{"llama3_rope_scaled", 2}, TpCase{"llama3_rope_scaled", 4}),
                         [](const auto& test_param) {
                           return test_param.param.fixture + "_tp" + std::to_string(test_param.param.ranks);
                         });

TEST(TpSimulation, RanksThatDoNotDivideTheHeadsAreOneLineErrors) {
  try {
    tp::TpSimulatedCpuBackend::load(fixture_dir("qwen2_gqa_bias"), 3, small_options());
    FAIL() << "3 ranks for 4 heads were accepted";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("4 attention heads do not split over 3 ranks"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
}

// Quantized checkpoints written by qed quantize from the GQA fixture: per-tensor FP8 scales (replicated), per-channel
// FP8 and int8 scales (sliced with column-parallel rows, whole for row-parallel layers), static input scales and
// FP8 KV-cache scales (replicated). With static activation scales the sharded model is the unsharded one up to
// reassociation, as for bf16.
struct QuantCase {
  std::string name;
  quant::QuantizeOptions options;
};

class TpQuantized : public ::testing::TestWithParam<QuantCase> {};

TEST_P(TpQuantized, TwoRanksMatchUnsharded) {
  const std::string src = fixture_dir("qwen2_gqa_bias");
  test::TempDir tmp;
  const quant::QuantizeOptions& q = GetParam().options;
  quant::CalibrationStats stats;
  {
    CpuBackend calibration(ModelConfig::from_file(src + "/config.json"), Checkpoint::open(src), small_options());
    std::vector<std::vector<int32_t>> samples;
    for (int i = 0; i < 3; ++i) {
      std::vector<int32_t> ids;
      for (int t = 0; t < 20; ++t) ids.push_back(int32_t((i * 131 + t * 17) % 512));
      samples.push_back(ids);
    }
    stats = quant::calibrate(calibration, samples);
  }
  quant::write_quantized_checkpoint(src, tmp.path(), q, &stats);
  const ModelConfig config = ModelConfig::from_file(tmp.file("config.json"));
  ASSERT_TRUE(config.quantization.quantized());
  const Checkpoint checkpoint = Checkpoint::open(tmp.path());
  CpuBackend reference(config, checkpoint, small_options());
  for (int ranks : {2, 4}) {
    tp::TpSimulatedCpuBackend sharded(config, checkpoint, ranks, small_options());
    const std::vector<int32_t> ids = {5, 77, 300, 12, 9, 410, 3, 250, 61, 8, 199, 40};
    const std::vector<float> want = prefill_logits(reference, ids), got = prefill_logits(sharded, ids);
    const float diff = max_abs_diff(got, want);
    std::printf("[ tp ] %s N=%d: max |diff| vs unsharded %.3g (max |logit| %.3g)\n", GetParam().name.c_str(), ranks,
                double(diff), double(max_abs(want)));
    EXPECT_LE(diff, kRelativeTolerance * std::max(1.0f, max_abs(want))) << ranks << " ranks";
  }
}

quant::QuantizeOptions quantize(QuantMethod method, bool per_channel, bool kv_fp8) {
  quant::QuantizeOptions q;
  q.method = method;
  q.per_channel = per_channel;
  q.kv_cache_fp8 = kv_fp8;
  return q;
}

INSTANTIATE_TEST_SUITE_P(Formats, TpQuantized,
                         ::testing::Values(QuantCase{"fp8_tensor_kvfp8", quantize(QuantMethod::Fp8, false, true)},
                                           QuantCase{"fp8_channel", quantize(QuantMethod::Fp8, true, false)},
                                           QuantCase{"int8_wo", quantize(QuantMethod::Int8WeightOnly, true, false)}),
                         [](const auto& test_param) { return test_param.param.name; });

// The CUDA runner's rank threads (host-only, so tested here): every job on every rank, each rank always on its own
// thread (its device stays current), errors rethrown only after all ranks finished, no lost wake-ups.
TEST(RankThreads, EveryRankRunsOnItsOwnThreadEveryTime) {
  std::vector<std::thread::id> init_ids(3);
  tp::RankThreads threads(3, [&](int r) { init_ids[size_t(r)] = std::this_thread::get_id(); });
  std::vector<std::atomic<int>> runs(3);
  for (int i = 0; i < 500; ++i) {
    threads.run([&](int r) {
      EXPECT_EQ(std::this_thread::get_id(), init_ids[size_t(r)]);
      runs[size_t(r)].fetch_add(1);
    });
  }
  for (int r = 0; r < 3; ++r) EXPECT_EQ(runs[size_t(r)].load(), 500);
  EXPECT_NE(init_ids[0], init_ids[1]);
  EXPECT_NE(init_ids[0], std::this_thread::get_id());
}

TEST(RankThreads, AFailingRankIsRethrownAfterTheOthersFinished) {
  tp::RankThreads threads(3, [](int) {});
  std::atomic<int> finished{0};
  try {
    threads.run([&](int r) {
      if (r == 1) throw Error("rank 1 failed");
      finished.fetch_add(1);
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank 1 failed");
  }
  EXPECT_EQ(finished.load(), 2);
  threads.run([&](int) { finished.fetch_add(1); });  // usable afterwards, the old error gone
  EXPECT_EQ(finished.load(), 5);
}

TEST(RankThreads, AFailedInitThrowsFromTheConstructorWithoutHanging) {
  EXPECT_THROW(tp::RankThreads(4,
                               [](int r) {
                                 if (r == 2) throw Error("cannot use device 2");
                               }),
               Error);
}

}  // namespace
}  // namespace qed::testing
