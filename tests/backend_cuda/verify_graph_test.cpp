// CUDA graphs of speculative verify steps (CudaBackend::graph_verify_forward) on the HF fixtures. A replayed graph
// must equal the same graph-layout step launched eagerly bit for bit (logits, device draws, hidden states): same
// kernels, same arguments, so any difference means a step-specific value was baked into the capture. Padding (a
// batch padded to a power of two, a sequence's rows padded to the step's widest) must not change a real row's bits:
// rows are independent in every kernel of the layers at a fixed row count. Against the plain eager path (another
// row count, another attention split) the logits agree to the bf16 tolerance of cuda_backend_test.cpp, not bit for
// bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#include "backend_test_util.h"
#include "engine/engine.h"
#include "spec/draft_tree.h"
#include "spec/synthetic_acceptance.h"

namespace qed::testing {
namespace {

constexpr float kLogitTolerance = 5e-2f;  // as cuda_backend_test.cpp: bf16 activations, different GEMM shapes
constexpr int kBlocksPerSequence = 16;    // sequence slot q owns blocks [16 q, 16 q + 16)

enum class Launch { Eager, GraphLayoutEager, Graphs };

std::unique_ptr<CudaBackend> load_backend(const std::string& name, Launch launch) {
  CudaBackendOptions options;
  options.cuda_graphs = launch != Launch::Eager;
  options.replay_graphs = launch == Launch::Graphs;
  options.verify_graphs = true;
  options.num_blocks = 8 * kBlocksPerSequence;
  options.max_batched_tokens = 1024;
  options.max_logits_rows = 48;
  return CudaBackend::load(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name, options);
}

// A sequence in slot `slot` after `cached` tokens, its last token and a draft below it (rows: token, then nodes).
SequenceChunk verify_chunk(int slot, int32_t cached, int32_t last_token, const spec::DraftTree& draft) {
  SequenceChunk chunk;
  chunk.tokens = {last_token};
  chunk.num_cached = cached;
  if (!draft.empty()) spec::append_draft_to_chunk(draft, draft.size(), cached, chunk);
  chunk.block_table = iota_blocks(slot * kBlocksPerSequence, (cached + int32_t(chunk.tokens.size()) + 15) / 16);
  return chunk;
}

// Every logits row drawn on the device too, greedy and sampled in turn, each as the token after its row.
void draw_every_row(ForwardBatch& batch, const SamplingParams* greedy, const SamplingParams* sampled) {
  int row = 0;
  for (size_t q = 0; q < batch.sequences.size(); ++q) {
    const SequenceChunk& seq = batch.sequences[q];
    const size_t rows = seq.logits_indices.empty() ? 1 : seq.logits_indices.size();
    for (size_t i = 0; i < rows; ++i, ++row) {
      batch.device_samples.push_back({row, row % 2 ? sampled : greedy, 7 + q, uint64_t(seq.num_cached) + i});
    }
  }
}

struct StepOutput {
  std::vector<float> logits, hidden;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
};

StepOutput run(CudaBackend& backend, const ForwardBatch& batch) {
  ForwardResult result;
  backend.forward(batch, result);
  StepOutput out{result.logits, result.hidden, {}, {}};
  for (const SampledToken& s : result.samples) {
    out.tokens.push_back(s.token);
    out.logprobs.push_back(s.logprob);
  }
  return out;
}

class VerifyGraphs : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
    fixture_ = load_hf_fixture(GetParam());
    greedy_.temperature = 0;
    greedy_.logprobs = 0;
    sampled_.temperature = 0.8f;
    sampled_.top_p = 0.9f;
    sampled_.logprobs = 0;
  }
  // The fixtures' prompts of 17, 64 and 130 tokens, in turn (the first two have 1 and 5).
  const std::vector<int32_t>& prompt(size_t i) const { return fixture_.prompts[2 + i % 3].ids; }
  // Slots first_slot + i hold prompt(i)'s K/V.
  void prefill(CudaBackend& backend, int first_slot, int count) const {
    for (int i = 0; i < count; ++i) prefill_logits(backend, prompt(size_t(i)), (first_slot + i) * kBlocksPerSequence);
  }
  // A draft of prompt tokens (any valid ids do): the first `chain` as a chain, or two beams merged into a tree.
  spec::DraftTree chain_draft(size_t q, size_t length) const {
    const std::vector<int32_t>& ids = prompt(q);
    return spec::DraftTree::linear(std::vector<int32_t>(ids.begin(), ids.begin() + long(length)));
  }
  spec::DraftTree beam_tree(size_t q) const {
    const std::vector<int32_t>& ids = prompt(q);
    return spec::DraftTree::from_beams({{ids[0], ids[1], ids[2]}, {ids[0], ids[3], ids[4]}});  // 5 nodes
  }
  // Step `step` of a run of 3 sequences: a chain of 3 drafts, a beam tree of 5 nodes (6 rows: the widest), a
  // decode token; padded to 4 sequences of 6 rows.
  ForwardBatch mixed_step(int step, bool want_hidden = false) const {
    ForwardBatch batch;
    for (int q = 0; q < 3; ++q) {
      const int32_t cached = int32_t(prompt(size_t(q)).size()) + step;
      const int32_t last = prompt(size_t(q))[size_t(step + 5)];
      const spec::DraftTree draft = q == 0   ? chain_draft(size_t(q + step), 3)
                                    : q == 1 ? beam_tree(size_t(q + step))
                                             : spec::DraftTree{};
      batch.sequences.push_back(verify_chunk(q, cached, last, draft));
    }
    batch.want_hidden = want_hidden;
    draw_every_row(batch, &greedy_, &sampled_);
    return batch;
  }

  HfFixture fixture_;
  SamplingParams greedy_, sampled_;
};

TEST_P(VerifyGraphs, ReplayEqualsTheGraphLayoutLaunchedEagerlyBitForBit) {
  auto graphs = load_backend(GetParam(), Launch::Graphs);
  auto layout_eager = load_backend(GetParam(), Launch::GraphLayoutEager);
  for (CudaBackend* backend : {graphs.get(), layout_eager.get()}) prefill(*backend, 0, 3);
  prefill(*graphs, 3, 3);
  // Another batch of the same key first (slots 3-5, other tokens): the capture the later steps replay.
  ForwardBatch other = mixed_step(0);
  for (int q = 0; q < 3; ++q) {
    SequenceChunk& seq = other.sequences[size_t(q)];
    seq.block_table = iota_blocks((q + 3) * kBlocksPerSequence, int(seq.block_table.size()));
    for (int32_t& token : seq.tokens) token = (token + 1) % fixture_.vocab;
  }
  run(*graphs, other);
  ASSERT_EQ(graphs->graph_counts().verify_steps, 1) << "the mixed step must take the verify-graph layout";
  for (int step = 0; step < 3; ++step) {
    const ForwardBatch batch = mixed_step(step, step == 2);
    const StepOutput replayed = run(*graphs, batch);
    const StepOutput launched = run(*layout_eager, batch);
    EXPECT_EQ(replayed.logits, launched.logits) << "step " << step;
    EXPECT_EQ(replayed.tokens, launched.tokens) << "step " << step;
    EXPECT_EQ(replayed.logprobs, launched.logprobs) << "step " << step;
    EXPECT_EQ(replayed.hidden, launched.hidden) << "step " << step;
    ASSERT_EQ(replayed.tokens.size(), size_t(4 + 6 + 1));
  }
  EXPECT_EQ(graphs->graph_counts().verify_steps, 4);
  EXPECT_EQ(graphs->graph_counts().replays, 3);
  EXPECT_EQ(layout_eager->graph_counts().verify_steps, 3);
  EXPECT_EQ(layout_eager->graph_counts().replays, 0);
}

TEST_P(VerifyGraphs, GraphStepsMatchThePlainEagerPathWithinBf16Tolerance) {
  auto graphs = load_backend(GetParam(), Launch::Graphs);
  auto eager = load_backend(GetParam(), Launch::Eager);
  for (CudaBackend* backend : {graphs.get(), eager.get()}) prefill(*backend, 0, 3);
  for (int step = 0; step < 3; ++step) {  // eager + capture, then replays
    const ForwardBatch batch = mixed_step(step);
    const StepOutput got = run(*graphs, batch);
    const StepOutput want = run(*eager, batch);
    ASSERT_EQ(got.logits.size(), want.logits.size());
    const float scale = std::max(1.0f, max_abs(want.logits));
    const float diff = max_abs_diff(got.logits, want.logits);
    std::printf("[ verify graph ] %s step %d: max|diff| vs eager %.3g, scale %.3g\n", GetParam().c_str(), step,
                double(diff), double(scale));
    EXPECT_LE(diff, kLogitTolerance * scale) << "step " << step;
  }
  EXPECT_EQ(graphs->graph_counts().replays, 2);
  EXPECT_EQ(eager->graph_counts().verify_steps, 0);
}

// The same real rows, once beside padding and once beside real rows in its place: their hidden states (the final
// norm of the residual stream, before the lm_head, whose row count differs) must be identical.
TEST_P(VerifyGraphs, PaddingRowsDoNotChangeRealRowsBitForBit) {
  auto graphs = load_backend(GetParam(), Launch::Graphs);
  prefill(*graphs, 0, 4);
  auto chunk = [&](int q, size_t draft_len) {
    const int32_t cached = int32_t(prompt(size_t(q)).size());
    const spec::DraftTree draft = q == 1 ? beam_tree(1) : chain_draft(size_t(q), draft_len);
    return verify_chunk(q, cached, prompt(size_t(q))[3], draft);
  };
  ForwardBatch padded;  // 3 sequences (a 4th slot of padding), a chain of 2 under a widest chunk of 6
  padded.sequences = {chunk(0, 2), chunk(1, 0), chunk(2, 0)};  // the last a decode token: 5 padding rows
  padded.want_hidden = true;
  ForwardBatch full = padded;  // the chain one node longer, and a real 4th sequence of 6 rows
  full.sequences[0] = chunk(0, 3);
  full.sequences.push_back(chunk(3, 5));
  run(*graphs, padded);  // eager + capture; the two below replay one graph
  const StepOutput a = run(*graphs, padded);
  const StepOutput b = run(*graphs, full);
  EXPECT_EQ(graphs->graph_counts().replays, 2);
  const size_t hidden = size_t(graphs->config().hidden_size);
  // Rows of `padded`: chain 3, tree 6, decode 1; of `full`: chain 4, tree 6, decode 1, chain 6.
  auto rows = [&](const StepOutput& out, size_t first, size_t count) {
    return std::vector<float>(out.hidden.begin() + long(first * hidden),
                              out.hidden.begin() + long((first + count) * hidden));
  };
  ASSERT_EQ(a.hidden.size(), 10 * hidden);
  ASSERT_EQ(b.hidden.size(), 17 * hidden);
  EXPECT_EQ(rows(a, 0, 3), rows(b, 0, 3)) << "the chain beside its padding rows";
  EXPECT_EQ(rows(a, 3, 7), rows(b, 4, 7)) << "the tree and the decode token beside a padding slot";
}

// The engine with a synthetic drafter (chain drafts of 3, accepted by a seeded coin): greedy and seeded sampling,
// sequences finishing at different lengths so verify steps of several row counts occur. Replayed graphs give the
// tokens and acceptance of the graph layout launched eagerly; the plain eager path is reported beside them (its
// GEMM shapes differ, so a bf16 near-tie may go the other way).
TEST_P(VerifyGraphs, SpeculativeEngineTokensWithGraphsEqualTheEagerLaunches) {
  std::vector<std::vector<int32_t>> tokens[3];
  EngineStats stats[3];
  int64_t replays = 0, verify_steps = 0;
  for (Launch launch : {Launch::Graphs, Launch::GraphLayoutEager, Launch::Eager}) {
    auto cuda = load_backend(GetParam(), launch);
    EngineConfig config;
    config.drafter = std::make_shared<spec::SyntheticDrafter>(0.6, 3, cuda->config().vocab_size, 5);
    config.synthetic_acceptance = spec::SyntheticAcceptance{0.6, 5};
    Engine engine(*cuda, config);
    for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
      SamplingParams params = p % 2 ? sampled_ : greedy_;
      params.logprobs = -1;
      params.max_tokens = 20 + 3 * int(p);
      params.ignore_eos = true;
      params.n = p % 2 ? 2 : 1;
      params.seed = 3 + p;
      engine.add_request(fixture_.prompts[p].ids, params);  // the short ones prefill as graph-layout steps too
    }
    while (engine.has_unfinished()) engine.step();
    std::vector<RequestResult> results = engine.take_finished();
    std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    const size_t i = size_t(launch == Launch::Graphs ? 0 : launch == Launch::GraphLayoutEager ? 1 : 2);
    for (const RequestResult& r : results) {
      for (const SequenceResult& seq : r.sequences) tokens[i].push_back(seq.token_ids);
    }
    stats[i] = engine.stats();
    if (launch == Launch::Graphs) {
      replays = cuda->graph_counts().replays;
      verify_steps = cuda->graph_counts().verify_steps;
    }
  }
  EXPECT_EQ(tokens[0], tokens[1]);
  EXPECT_EQ(stats[0].spec_accepted_at_depth, stats[1].spec_accepted_at_depth);
  EXPECT_GT(stats[0].spec_verify_steps, 0);
  EXPECT_GT(verify_steps, 0);
  EXPECT_GT(replays, 0);
  size_t same = 0;
  for (size_t s = 0; s < tokens[0].size() && s < tokens[2].size(); ++s) same += tokens[0][s] == tokens[2][s];
  std::printf(
      "[ verify graph engine ] %s: %lld verify-graph steps (%lld replays), %lld of %lld draft tokens accepted; %zu of "
      "%zu sequences equal to the plain eager path's\n",
      GetParam().c_str(), static_cast<long long>(verify_steps), static_cast<long long>(replays),
      static_cast<long long>(stats[0].spec_accepted_tokens), static_cast<long long>(stats[0].spec_draft_tokens), same,
      tokens[2].size());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, VerifyGraphs, ::testing::ValuesIn(hf_fixture_names()),
                         [](const auto& test_param) { return test_param.param; });

}  // namespace
}  // namespace qed::testing
