// The CUDA backend against the CPU reference backend and the HF fixtures (tests/fixtures/hf): same bf16 weights,
// but the CUDA forward keeps activations in bf16 (as HF's bf16 inference does) where the references use fp32, so
// logits agree to bf16 accuracy, not bit for bit. Bound: 5% of the logit scale, max(1, max|logit|): about ten
// bf16 roundings (2^-9 relative each) per layer compound over the fixtures' 2-3 layers to ~1-2% (worst measured on
// an H200: 2.4%, qwen2_tied_mha at 130 tokens); wrong weights, a swapped rotary half or a missed bias move logits by
// O(the scale).
//
// Greedy continuations: the fixtures are random-weight models whose top-2 logits are often close, and no bf16
// forward (HF's own included: tools/hf_bf16_drift.py measures it) can order two tokens whose fp32 logits differ by
// less than its error. So a continuation must equal HF's token for token up to its first divergence, and there the
// fp32 reference (the CPU backend, equal to HF to 1e-6) must rank the two tokens within 2x the logit tolerance of
// each other: a near-tie, where either token is a correct greedy choice. After it the contexts differ, so the
// rest is checked teacher-forced instead: on HF's own continuation every CUDA argmax is HF's token or a near-tie.
// This is vLLM's check_logprobs_close rule with the tie margin made explicit.
#include "backend/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "backend/cuda/device.h"
#include "backend_test_util.h"
#include "core/error.h"
#include "engine/engine.h"
#include "spec/oracle_drafter.h"

namespace qed::testing {
namespace {

constexpr float kLogitTolerance = 5e-2f;

std::unique_ptr<CudaBackend> load_cuda_fixture(const std::string& name, int num_blocks = 64, bool graphs = false) {
  CudaBackendOptions options;
  options.cuda_graphs = graphs;
  options.num_blocks = num_blocks;
  options.max_batched_tokens = 1024;
  options.max_logits_rows = 48;  // below the longest prompt: the lm_head runs in several passes
  return CudaBackend::load(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name, options);
}

size_t argmax_of(const float* row, int n) {
  return size_t(std::max_element(row, row + n) - row);
}

float scale_of(const std::vector<float>& logits) {
  return std::max(1.0f, max_abs(logits));
}

class CudaParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(CudaParity, PrefillLogitsMatchCpuAndHfWithinBf16Tolerance) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto cuda = load_cuda_fixture(GetParam());
  auto cpu = load_fixture_backend(GetParam());
  for (size_t p = 0; p < fixture.prompts.size(); ++p) {
    const HfPrompt& prompt = fixture.prompts[p];
    const std::vector<float> got = prefill_logits(*cuda, prompt.ids);
    const std::vector<float> want_cpu = prefill_logits(*cpu, prompt.ids);
    ASSERT_EQ(got.size(), prompt.logits.size());
    const float scale = scale_of(prompt.logits);
    const float vs_hf = max_abs_diff(got, prompt.logits), vs_cpu = max_abs_diff(got, want_cpu);
    std::printf("[ parity ] %s prompt %zu (%zu tokens): max|diff| vs HF %.3g, vs CPU %.3g, scale %.3g\n",
                fixture.name.c_str(), p, prompt.ids.size(), double(vs_hf), double(vs_cpu), double(scale));
    EXPECT_LE(vs_hf, kLogitTolerance * scale) << fixture.name << " prompt " << p;
    EXPECT_LE(vs_cpu, kLogitTolerance * scale) << fixture.name << " prompt " << p;
  }
}

// Prefill, then one decode step per token; `batched` runs every prompt together in lockstep.
std::vector<std::vector<int32_t>> greedy(Backend& backend, const HfFixture& fixture, bool batched) {
  std::vector<std::vector<int32_t>> out(fixture.prompts.size());
  const int block_size = backend.kv_layout().block_size;
  auto run = [&](std::vector<size_t> which) {
    std::vector<SequenceChunk> chunks(which.size());
    for (size_t i = 0; i < which.size(); ++i) chunks[i].tokens = fixture.prompts[which[i]].ids;
    while (out[which[0]].size() < fixture.prompts[which[0]].greedy.size()) {
      ForwardBatch batch;
      for (size_t i = 0; i < which.size(); ++i) {
        const size_t slots = size_t(chunks[i].num_cached) + chunks[i].tokens.size();
        // Sequence i owns blocks [16 i, 16 i + 16): 256 slots, more than a prompt + 24 tokens.
        chunks[i].block_table = iota_blocks(int(which[i]) * 16, int((slots + size_t(block_size) - 1) / block_size));
        batch.sequences.push_back(chunks[i]);
      }
      ForwardResult result;
      backend.forward(batch, result);
      for (size_t i = 0; i < which.size(); ++i) {
        const int32_t token = int32_t(argmax_of(result.logits.data() + i * size_t(fixture.vocab), fixture.vocab));
        out[which[i]].push_back(token);
        chunks[i].num_cached += int32_t(chunks[i].tokens.size());
        chunks[i].tokens = {token};
      }
    }
  };
  if (batched) {
    std::vector<size_t> all(fixture.prompts.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    run(all);
  } else {
    for (size_t i = 0; i < fixture.prompts.size(); ++i) run({i});
  }
  return out;
}

// Checks `got` (a greedy continuation of `prompt` by the CUDA backend) against HF's as the header says.
class GreedyChecker {
 public:
  GreedyChecker(const HfFixture& fixture, CudaBackend& cuda) : fixture_(fixture) {
    auto cpu = load_fixture_backend(fixture.name, 16 * int(fixture.prompts.size()));
    for (const HfPrompt& prompt : fixture.prompts) {
      reference_.push_back(prefill_logits(*cpu, full_sequence(prompt)));
      teacher_forced_.push_back(prefill_logits(cuda, full_sequence(prompt)));
    }
  }

  // Counts near-tie divergences so a test can report them.
  int check(const std::vector<std::vector<int32_t>>& got, const std::string& what) const {
    int near_ties = 0;
    for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
      const HfPrompt& prompt = fixture_.prompts[p];
      EXPECT_EQ(got[p].size(), prompt.greedy.size()) << what << " prompt " << p;
      const size_t n = std::min(got[p].size(), prompt.greedy.size());
      const size_t d =
          size_t(std::mismatch(got[p].begin(), got[p].begin() + long(n), prompt.greedy.begin()).first - got[p].begin());
      if (d < n) {
        ++near_ties;
        const float margin = reference_margin(p, d, got[p][d]);
        std::printf("[ greedy ] %s %s prompt %zu: first divergence at step %zu (HF %d, got %d), fp32 margin %.3g\n",
                    fixture_.name.c_str(), what.c_str(), p, d, prompt.greedy[d], got[p][d], double(margin));
        EXPECT_LE(margin, tie_bound(p)) << what << " prompt " << p << " step " << d << ": not a near-tie";
      }
    }
    return near_ties;
  }

  // Every CUDA argmax along HF's own continuation is HF's token or a near-tie.
  void check_teacher_forced() const {
    const size_t vocab = size_t(fixture_.vocab);
    for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
      const HfPrompt& prompt = fixture_.prompts[p];
      for (size_t t = 0; t < prompt.greedy.size(); ++t) {
        const size_t row = prompt.ids.size() - 1 + t;
        const int32_t token = int32_t(argmax_of(teacher_forced_[p].data() + row * vocab, int(vocab)));
        if (token == prompt.greedy[t]) continue;
        const float margin = reference_margin(p, t, token);
        std::printf("[ greedy ] %s teacher-forced prompt %zu step %zu: HF %d, CUDA %d, fp32 margin %.3g\n",
                    fixture_.name.c_str(), p, t, prompt.greedy[t], token, double(margin));
        EXPECT_LE(margin, tie_bound(p)) << "prompt " << p << " step " << t << ": not a near-tie";
      }
    }
  }

 private:
  static std::vector<int32_t> full_sequence(const HfPrompt& prompt) {
    std::vector<int32_t> ids = prompt.ids;
    ids.insert(ids.end(), prompt.greedy.begin(), prompt.greedy.end());
    return ids;
  }
  // How much HF's greedy token at continuation step t beats `token` in the fp32 reference.
  float reference_margin(size_t p, size_t t, int32_t token) const {
    const float* row = reference_[p].data() + (fixture_.prompts[p].ids.size() - 1 + t) * size_t(fixture_.vocab);
    return row[fixture_.prompts[p].greedy[t]] - row[token];
  }
  float tie_bound(size_t p) const { return 2.0f * kLogitTolerance * scale_of(reference_[p]); }

  const HfFixture& fixture_;
  std::vector<std::vector<float>> reference_, teacher_forced_;
};

TEST_P(CudaParity, GreedyContinuationMatchesHfAtBatchOne) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto cuda = load_cuda_fixture(GetParam(), 16 * int(fixture.prompts.size()));
  const GreedyChecker checker(fixture, *cuda);
  checker.check_teacher_forced();
  checker.check(greedy(*cuda, fixture, false), "batch 1");
}

TEST_P(CudaParity, GreedyContinuationMatchesHfBatched) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto cuda = load_cuda_fixture(GetParam(), 16 * int(fixture.prompts.size()));
  const GreedyChecker checker(fixture, *cuda);
  checker.check(greedy(*cuda, fixture, true), "batched");
}

TEST_P(CudaParity, GraphDecodeStepsMatchHfGreedyAndEagerLogits) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto graphs = load_cuda_fixture(GetParam(), 16 * int(fixture.prompts.size()), true);
  const GreedyChecker checker(fixture, *graphs);
  // Batched lockstep decoding replays the graph of the padded batch size from the second step on.
  checker.check(greedy(*graphs, fixture, true), "graphs batched");
  checker.check(greedy(*graphs, fixture, false), "graphs alone");
  // One decode step, graph vs eager, on the same cache contents.
  auto eager = load_cuda_fixture(GetParam(), 16 * int(fixture.prompts.size()));
  std::vector<float> logits[2];
  int i = 0;
  for (CudaBackend* backend : {graphs.get(), eager.get()}) {
    const std::vector<int32_t>& ids = fixture.prompts[2].ids;
    prefill_logits(*backend, ids);
    for (int step = 0; step < 3; ++step) {  // eager, capture, replay on the graph backend
      SequenceChunk chunk;
      chunk.num_cached = int32_t(ids.size()) + step;
      chunk.tokens = {ids[size_t(step)]};
      chunk.block_table = iota_blocks(0, chunk.num_cached / 16 + 1);
      ForwardBatch batch;
      batch.sequences.push_back(chunk);
      ForwardResult result;
      backend->forward(batch, result);
      if (step == 2) logits[i] = result.logits;
    }
    ++i;
  }
  EXPECT_LE(max_abs_diff(logits[0], logits[1]), kLogitTolerance * scale_of(logits[1]));
}

TEST_P(CudaParity, ChunkedPrefillMatchesOneChunk) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto cuda = load_cuda_fixture(GetParam());
  const std::vector<int32_t>& ids = fixture.prompts.back().ids;
  const std::vector<float> whole = prefill_logits(*cuda, ids);
  std::vector<float> chunked;
  const std::vector<size_t> splits = {0, 7, 57, 58, ids.size()};
  for (size_t c = 0; c + 1 < splits.size(); ++c) {
    SequenceChunk chunk;
    chunk.num_cached = int32_t(splits[c]);
    chunk.tokens.assign(ids.begin() + long(splits[c]), ids.begin() + long(splits[c + 1]));
    chunk.block_table = iota_blocks(20, int((splits[c + 1] + 15) / 16));
    chunk.logits_indices = all_indices(chunk.tokens.size());
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    ForwardResult result;
    cuda->forward(batch, result);
    chunked.insert(chunked.end(), result.logits.begin(), result.logits.end());
  }
  ASSERT_EQ(chunked.size(), whole.size());
  EXPECT_LE(max_abs_diff(chunked, whole), kLogitTolerance * scale_of(whole));
}

TEST_P(CudaParity, TreeMaskedCandidatesMatchCpu) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto cuda = load_cuda_fixture(GetParam());
  auto cpu = load_fixture_backend(GetParam());
  const std::vector<int32_t>& ids = fixture.prompts[1].ids;
  std::vector<float> got, want;
  for (Backend* backend : {static_cast<Backend*>(cuda.get()), static_cast<Backend*>(cpu.get())}) {
    prefill_logits(*backend, ids);  // fills blocks 0.. with the prompt's KV
    // Two branches of depth 2 after the prompt: [a, b] and [c, d], siblings sharing positions.
    SequenceChunk tree;
    tree.num_cached = int32_t(ids.size());
    tree.tokens = {ids[0], ids[1], ids[2], ids[3]};
    const int32_t depth0 = int32_t(ids.size());
    tree.positions = {depth0, depth0 + 1, depth0, depth0 + 1};
    tree.attention_mask = {1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1};
    tree.block_table = iota_blocks(0, int((ids.size() + 4 + 15) / 16));
    tree.logits_indices = all_indices(4);
    ForwardBatch batch;
    batch.sequences.push_back(tree);
    ForwardResult result;
    backend->forward(batch, result);
    (backend == cuda.get() ? got : want) = result.logits;
  }
  EXPECT_LE(max_abs_diff(got, want), kLogitTolerance * scale_of(want));
}

TEST_P(CudaParity, HiddenStatesMatchCpu) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto cuda = load_cuda_fixture(GetParam());
  auto cpu = load_fixture_backend(GetParam());
  std::vector<float> hidden[2];
  int i = 0;
  for (Backend* backend : {static_cast<Backend*>(cuda.get()), static_cast<Backend*>(cpu.get())}) {
    SequenceChunk chunk;
    chunk.tokens = fixture.prompts[0].ids;
    chunk.block_table = iota_blocks(0, int((chunk.tokens.size() + 15) / 16));
    chunk.logits_indices = all_indices(chunk.tokens.size());
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    batch.want_hidden = true;
    ForwardResult result;
    backend->forward(batch, result);
    ASSERT_EQ(result.hidden.size(), chunk.tokens.size() * size_t(backend->config().hidden_size));
    // skip_logits without samples (the draft-head trainer's base forward): no lm_head, no logits, the same hidden
    // states (the same kernels before the lm_head: identical).
    batch.skip_logits = true;
    ForwardResult hidden_only;
    backend->forward(batch, hidden_only);
    EXPECT_TRUE(hidden_only.logits.empty());
    EXPECT_EQ(hidden_only.hidden, result.hidden);
    hidden[i++] = result.hidden;
  }
  EXPECT_LE(max_abs_diff(hidden[0], hidden[1]), kLogitTolerance * scale_of(hidden[1]));
}

TEST_P(CudaParity, CopiedKvBlocksContinueLikeTheOriginal) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  auto cuda = load_cuda_fixture(GetParam());
  const std::vector<int32_t>& ids = fixture.prompts[3].ids;  // 64 tokens: 4 full blocks
  prefill_logits(*cuda, ids, 0);
  cuda->copy_kv_blocks(std::vector<std::pair<int32_t, int32_t>>{{0, 10}, {1, 11}, {2, 12}, {3, 13}});
  std::vector<float> logits[2];
  for (int copy = 0; copy < 2; ++copy) {
    SequenceChunk chunk;
    chunk.num_cached = int32_t(ids.size());
    chunk.tokens = {ids[5]};
    chunk.block_table = copy == 0 ? std::vector<int32_t>{0, 1, 2, 3, 4} : std::vector<int32_t>{10, 11, 12, 13, 14};
    ForwardBatch batch;
    batch.sequences.push_back(chunk);
    ForwardResult result;
    cuda->forward(batch, result);
    logits[copy] = result.logits;
  }
  EXPECT_EQ(logits[0], logits[1]);  // same shapes, same kernels, same cache contents: identical
}

TEST_P(CudaParity, BadBatchesFailWithAnErrorNotAFault) {
  auto cuda = load_cuda_fixture(GetParam(), 128);
  SequenceChunk chunk;
  chunk.tokens = {1, 2, 3};
  chunk.block_table = {128};  // outside the 128-block cache
  ForwardBatch batch;
  batch.sequences.push_back(chunk);
  ForwardResult result;
  EXPECT_THROW(cuda->forward(batch, result), Error);
  chunk.tokens.assign(1025, 1);  // over max_batched_tokens, in a valid block table
  chunk.block_table = iota_blocks(0, 65);
  batch.sequences = {chunk};
  EXPECT_THROW(cuda->forward(batch, result), Error);
}

// The engine over the CUDA backend, with device sampling and with it switched off (host sampling of the same fp32
// logits): both samplers follow sample_token() on identical logits, so the tokens must be identical.
class HostSamplingOnly final : public Backend {
 public:
  explicit HostSamplingOnly(Backend& inner) : inner_(inner) {}
  std::string name() const override { return inner_.name(); }
  const ModelConfig& config() const override { return inner_.config(); }
  KvCacheLayout kv_layout() const override { return inner_.kv_layout(); }
  void forward(const ForwardBatch& batch, ForwardResult& result) override { inner_.forward(batch, result); }
  void copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> pairs) override { inner_.copy_kv_blocks(pairs); }

 private:
  Backend& inner_;
};

TEST_P(CudaParity, DeviceSamplingInTheEngineEqualsHostSampling) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  std::vector<std::vector<int32_t>> tokens[2];
  for (int device = 0; device < 2; ++device) {
    auto cuda = load_cuda_fixture(GetParam(), 256);
    HostSamplingOnly host_only(*cuda);
    Engine engine(device ? static_cast<Backend&>(*cuda) : static_cast<Backend&>(host_only), EngineConfig{});
    SamplingParams params;
    params.temperature = 0.8f;
    params.top_p = 0.9f;
    params.top_k = 50;
    params.max_tokens = 16;
    params.ignore_eos = true;
    params.n = 3;
    params.seed = 11;
    for (const HfPrompt& prompt : fixture.prompts) engine.add_request(prompt.ids, params);
    while (engine.has_unfinished()) engine.step();
    std::vector<RequestResult> results = engine.take_finished();
    std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    for (const RequestResult& r : results) {
      for (const SequenceResult& seq : r.sequences) tokens[device].push_back(seq.token_ids);
    }
  }
  EXPECT_EQ(tokens[1], tokens[0]);
}

// Verify steps draw every draft row on the device too (no logits rows come back): against host sampling of the
// same forward's rows, greedy and seeded, the tokens and the acceptance must be identical. The drafts are an
// oracle's (right with probability 0.6) over the fixture's own continuations, so paths are accepted and rejected.
TEST_P(CudaParity, DraftRowsSampledOnTheDeviceEqualHostSampling) {
  const HfFixture fixture = load_hf_fixture(GetParam());
  const auto jobs = [&](Engine& engine) {
    SamplingParams greedy;
    greedy.temperature = 0;
    greedy.max_tokens = 24;
    greedy.ignore_eos = true;
    SamplingParams sampled = greedy;
    sampled.temperature = 0.8f;
    sampled.top_p = 0.9f;
    sampled.n = 2;
    sampled.seed = 3;
    for (const HfPrompt& prompt : fixture.prompts) {
      engine.add_request(prompt.ids, greedy);
      engine.add_request(prompt.ids, sampled);
    }
    while (engine.has_unfinished()) engine.step();
    std::vector<RequestResult> results = engine.take_finished();
    std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return results;
  };
  std::vector<spec::RecordedSequence> records;
  {
    auto cuda = load_cuda_fixture(GetParam(), 256);
    Engine engine(*cuda, EngineConfig{});
    for (const RequestResult& r : jobs(engine)) {
      for (const SequenceResult& seq : r.sequences) {
        records.push_back({r.prompt_token_ids, r.prompt_token_ids.size()});
        records.back().tokens.insert(records.back().tokens.end(), seq.token_ids.begin(), seq.token_ids.end());
      }
    }
  }
  std::vector<std::vector<int32_t>> tokens[2];
  EngineStats stats[2];
  for (int device = 0; device < 2; ++device) {
    auto cuda = load_cuda_fixture(GetParam(), 256);
    HostSamplingOnly host_only(*cuda);
    EngineConfig config;
    config.drafter = std::make_shared<spec::OracleDrafter>(
        spec::OracleDrafterConfig{.p = 0.6, .draft_len = 3, .vocab_size = cuda->config().vocab_size, .seed = 1},
        records);
    Engine engine(device ? static_cast<Backend&>(*cuda) : static_cast<Backend&>(host_only), config);
    for (const RequestResult& r : jobs(engine)) {
      for (const SequenceResult& seq : r.sequences) tokens[device].push_back(seq.token_ids);
    }
    stats[device] = engine.stats();
  }
  EXPECT_EQ(tokens[1], tokens[0]);
  EXPECT_EQ(stats[1].spec_accepted_at_depth, stats[0].spec_accepted_at_depth);
  EXPECT_GT(stats[1].spec_accepted_tokens, 0);
  std::printf("[ spec device ] %s: %lld verify steps, %lld of %lld draft tokens accepted\n", GetParam().c_str(),
              static_cast<long long>(stats[1].spec_verify_steps), static_cast<long long>(stats[1].spec_accepted_tokens),
              static_cast<long long>(stats[1].spec_draft_tokens));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaParity, ::testing::ValuesIn(hf_fixture_names()),
                         [](const auto& test_param) { return test_param.param; });

TEST(CudaKvSizing, CacheIsSizedFromTheMemoryFraction) {
  const auto devices = cuda::list_devices();
  if (devices.empty()) GTEST_SKIP() << "no CUDA device";
  CudaBackendOptions options;
  options.gpu_memory_fraction = 0.3f;
  options.max_batched_tokens = 256;
  auto backend = CudaBackend::load(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_gqa_bias", options);
  EXPECT_GT(backend->kv_layout().num_blocks, 1000);
  EXPECT_LE(double(backend->kv_cache_bytes()), 0.3 * double(devices[0].total_memory));
}

}  // namespace
}  // namespace qed::testing
