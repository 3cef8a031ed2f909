// Speculative decoding on the real fp32 CPU backend: with the n-gram drafter and with draft trees, greedy outputs
// are token-identical to decoding without speculation (and to HF's greedy on the fixture models), batched with
// non-speculating and prefilling sequences and at batch 1; seeded sampling draws the same tokens too; and the
// first two sampled tokens under speculation follow the target's distribution (chi-square).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine_test_util.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "spec/ngram_drafter.h"
#include "spec/redrafter_drafter.h"
#include "tokenizer/tokenizer.h"

namespace qed::testing {
namespace {

const std::string kFixtures = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/";
const std::string kDemo = std::string(QED_SOURCE_DIR) + "/models/demo";

std::unique_ptr<CpuBackend> load_backend(const std::string& dir) {
  CpuBackendOptions options;
  options.num_threads = 2;
  options.block_size = 4;
  options.num_blocks = 256;
  return CpuBackend::load(dir, options);
}

EngineConfig config_with(int max_seqs, int token_budget, std::shared_ptr<const spec::Drafter> drafter) {
  EngineConfig config;
  config.scheduler.max_num_seqs = max_seqs;
  config.scheduler.max_num_batched_tokens = token_budget;
  config.drafter = std::move(drafter);
  return config;
}

SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

// Knows the reference continuations and proposes a tree holding the right path and a corrupted one, in an order
// that varies (so accepted paths also run through later, non-contiguous branches), sometimes nothing.
class ReferenceTreeDrafter final : public spec::Drafter {
 public:
  ReferenceTreeDrafter(std::vector<std::vector<int32_t>> references, int depth, int vocab)
      : references_(std::move(references)), depth_(depth), vocab_(vocab) {}
  std::string name() const override { return "reference-tree"; }
  spec::DraftTree propose(const spec::DraftContext& context) const override {
    const auto tokens = context.tokens;
    std::mt19937_64 rng(tokens.size() * 31 + static_cast<uint64_t>(tokens.back()));
    for (const auto& reference : references_) {
      if (reference.size() <= tokens.size() || !std::equal(tokens.begin(), tokens.end(), reference.begin())) continue;
      const size_t depth =
          std::min({static_cast<size_t>(std::min(depth_, context.max_depth)), reference.size() - tokens.size()});
      std::vector<int32_t> exact(reference.begin() + static_cast<long>(tokens.size()),
                                 reference.begin() + static_cast<long>(tokens.size() + depth));
      std::vector<int32_t> noisy = exact;
      for (int32_t& t : noisy) {
        if (rng() % 3 == 0) t = static_cast<int32_t>((t + 1 + rng() % 7) % vocab_);
      }
      if (rng() % 5 == 0) return {};
      return rng() % 2 ? spec::DraftTree::from_beams({noisy, exact}) : spec::DraftTree::from_beams({exact, noisy});
    }
    return spec::DraftTree::linear(std::vector<int32_t>{1, 2});  // unknown context: a wrong guess
  }

 private:
  std::vector<std::vector<int32_t>> references_;
  int depth_;
  int vocab_;
};

std::vector<std::vector<int32_t>> full_sequences(const std::vector<Job>& jobs,
                                                 const std::vector<std::vector<int32_t>>& generated) {
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < jobs.size(); ++i) {
    out.push_back(jobs[i].prompt);
    out.back().insert(out.back().end(), generated[i].begin(), generated[i].end());
  }
  return out;
}

std::shared_ptr<const spec::Drafter> ngram(int k) {
  return std::make_shared<spec::NgramDrafter>(spec::NgramDrafterConfig{.num_draft_tokens = k});
}

struct Fixture {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> greedy;
  int max_new_tokens = 0;
};

Fixture load_fixture(const std::string& name) {
  std::ifstream in(kFixtures + name + "/fixture.json");
  const auto json = nlohmann::json::parse(in);
  return {json.at("prompts").get<std::vector<std::vector<int32_t>>>(),
          json.at("greedy").get<std::vector<std::vector<int32_t>>>(), json.at("max_new_tokens").get<int>()};
}

class EngineSpecCpu : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineSpecCpu, GreedyWithDraftsIsTokenIdenticalToHfAndToNoDrafts) {
  const Fixture f = load_fixture(GetParam());
  auto backend = load_backend(kFixtures + GetParam());
  std::vector<Job> jobs;
  for (const auto& prompt : f.prompts) jobs.push_back({prompt, greedy(f.max_new_tokens)});
  // Non-speculating neighbours (one long, still prefilling in the first steps) share every step.
  Job bystander{f.prompts[4], greedy(f.max_new_tokens)};
  bystander.params.speculate = false;
  jobs.push_back(bystander);
  Engine plain(*backend, config_with(8, 48, nullptr));
  const auto expected = generated_tokens(run_batched(plain, jobs));
  for (size_t i = 0; i < f.greedy.size(); ++i) ASSERT_EQ(expected[i], f.greedy[i]) << "prompt " << i;

  const std::vector<std::shared_ptr<const spec::Drafter>> drafters = {
      ngram(4),
      std::make_shared<ReferenceTreeDrafter>(full_sequences(jobs, expected), 4, backend->config().vocab_size)};
  for (const auto& drafter : drafters) {
    Engine engine(*backend, config_with(8, 48, drafter));
    EXPECT_EQ(generated_tokens(run_batched(engine, jobs)), expected) << drafter->name();
    // The n-gram drafter finds nothing to reuse in some fixture outputs; the reference tree always does.
    if (drafter->name() != "ngram") {
      EXPECT_GT(engine.stats().spec_accepted_tokens, 0) << drafter->name();
    }
    EXPECT_EQ(engine.block_manager().num_used_blocks(), 0);
    for (const Job& job : jobs) {  // batch 1
      Engine alone(*backend, config_with(1, 4096, drafter));
      Engine alone_plain(*backend, config_with(1, 4096, nullptr));
      EXPECT_EQ(generated_tokens(run_batched(alone, {job})), generated_tokens(run_batched(alone_plain, {job})))
          << drafter->name();
    }
  }
}

TEST_P(EngineSpecCpu, SeededSamplingWithDraftsDrawsTheSameTokens) {
  const Fixture f = load_fixture(GetParam());
  auto backend = load_backend(kFixtures + GetParam());
  std::vector<Job> jobs;
  for (size_t i = 0; i < f.prompts.size(); ++i) {
    SamplingParams p;
    p.temperature = 0.7f;
    p.top_k = 20;
    p.repetition_penalty = 1.05f;
    p.seed = 40 + i;
    p.n = 2;
    p.max_tokens = 20;
    p.ignore_eos = true;
    jobs.push_back({f.prompts[i], p});
  }
  Engine plain(*backend, config_with(8, 48, nullptr));
  const auto expected = generated_tokens(run_batched(plain, jobs));
  Engine engine(*backend, config_with(8, 48, ngram(3)));
  EXPECT_EQ(generated_tokens(run_batched(engine, jobs)), expected);
  EXPECT_GT(engine.stats().spec_verify_steps, 0);
}

// Checks every hidden state the engine hands a drafter against a fresh forward of the context without the last
// token (the row that produced it), bit for bit, then drafts with the wrapped drafter.
class HiddenCheckingDrafter final : public spec::Drafter {
 public:
  HiddenCheckingDrafter(const std::string& model_dir, std::shared_ptr<const spec::Drafter> inner)
      : reference_(load_backend(model_dir)), inner_(std::move(inner)) {}
  std::string name() const override { return "hidden-check(" + inner_->name() + ")"; }
  bool wants_hidden() const override { return true; }
  spec::DraftTree propose(const spec::DraftContext& context) const override {
    ForwardBatch batch;
    SequenceChunk chunk;
    chunk.tokens.assign(context.tokens.begin(), context.tokens.end() - 1);
    for (int32_t b = 0; b < 64; ++b) chunk.block_table.push_back(b);
    batch.sequences = {chunk};
    batch.want_hidden = true;
    ForwardResult result;
    reference_->forward(batch, result);
    ++checks;
    if (!std::equal(result.hidden.begin(), result.hidden.end(), context.hidden.begin(), context.hidden.end())) {
      ++mismatches;
    }
    return inner_->propose(context);
  }
  mutable int checks = 0;
  mutable int mismatches = 0;

 private:
  std::unique_ptr<CpuBackend> reference_;
  std::shared_ptr<const spec::Drafter> inner_;
};

std::shared_ptr<const spec::Drafter> random_redrafter(const std::string& model_dir, uint64_t seed) {
  const ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  std::vector<float> embeddings = tensor_to_f32(*ModelWeights::bind(checkpoint, config).embed_tokens);
  spec::RedrafterConfig head{.vocab_size = config.vocab_size,
                             .hidden_size = config.hidden_size,
                             .exit_dim = 2 * config.hidden_size,
                             .num_draft_layers = 2,
                             .rnn = true};
  return std::make_shared<spec::RedrafterDrafter>(
      spec::RedrafterHead::random(head, seed, 0.2f), std::move(embeddings),
      spec::RedrafterDrafterConfig{.num_beams = 4, .draft_len_per_beam = 3});
}

// ReDrafter's beams (an untrained head, so few accepted) through the engine: the hidden states it drafts from are
// the base model's exactly, and greedy outputs do not change.
TEST_P(EngineSpecCpu, RedrafterDraftsFromTheExactHiddenStateAndKeepsGreedyOutputs) {
  const Fixture f = load_fixture(GetParam());
  const std::string dir = kFixtures + GetParam();
  auto backend = load_backend(dir);
  std::vector<Job> jobs;
  for (const auto& prompt : f.prompts) jobs.push_back({prompt, greedy(12)});
  Engine plain(*backend, config_with(8, 64, nullptr));
  const auto expected = generated_tokens(run_batched(plain, jobs));
  auto checker = std::make_shared<HiddenCheckingDrafter>(dir, random_redrafter(dir, 5));
  Engine engine(*backend, config_with(8, 64, checker));
  EXPECT_EQ(generated_tokens(run_batched(engine, jobs)), expected);
  EXPECT_GT(checker->checks, 20);
  EXPECT_EQ(checker->mismatches, 0);
  EXPECT_GT(engine.stats().spec_draft_tokens, 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineSpecCpu,
                         ::testing::Values("qwen2_gqa_bias", "qwen2_tied_mha", "llama3_rope_scaled"));

std::vector<int32_t> demo_prompt(const Tokenizer& tokenizer, const std::string& problem) {
  const std::string text =
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\n" +
      problem + "<|im_end|>\n<|im_start|>assistant\n";
  return tokenizer.encode(text, false);
}

TEST(EngineSpecCpuDemo, NgramDraftsKeepTheDemoModelsGreedyOutput) {
  auto backend = load_backend(kDemo);
  const Tokenizer tokenizer = Tokenizer::from_file(kDemo + "/tokenizer.json");
  std::vector<Job> jobs;
  for (const char* problem : {"What is 92^2420 modulo 745?", "Compute 17! modulo 1009.",
                              "How many primes are there below 5000?", "What is gcd(123456, 7890)?"}) {
    SamplingParams p = greedy(60);
    p.ignore_eos = false;
    jobs.push_back({demo_prompt(tokenizer, problem), p});
  }
  jobs[1].params.speculate = false;
  jobs[1].params.max_tokens = 20;  // shorter, so the step count measures the speculating ones
  Engine plain(*backend, config_with(8, 64, nullptr));
  const auto expected = run_batched(plain, jobs);
  Engine engine(*backend, config_with(8, 64, ngram(4)));
  const auto actual = run_batched(engine, jobs);
  EXPECT_EQ(generated_tokens(actual), generated_tokens(expected));
  for (size_t i = 0; i < jobs.size(); ++i)
    EXPECT_EQ(actual[i].sequences[0].finish_reason, expected[i].sequences[0].finish_reason);
  // The demo's solutions repeat the problem's numbers in their code: drafting from the prompt pays off.
  EXPECT_GT(engine.stats().spec_accepted_tokens, 10);
  EXPECT_LT(engine.stats().steps, plain.stats().steps);
}

// Target probabilities (temperature 1) of the next token after `context`, from a plain forward.
std::vector<double> next_token_probs(Backend& backend, const std::vector<int32_t>& context) {
  ForwardBatch batch;
  SequenceChunk chunk;
  chunk.tokens = context;
  for (int32_t b = 0; b < 64; ++b) chunk.block_table.push_back(192 + b);
  batch.sequences = {chunk};
  ForwardResult result;
  backend.forward(batch, result);
  double max = *std::max_element(result.logits.begin(), result.logits.end());
  std::vector<double> p(result.logits.size());
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(result.logits[i] - max);
  for (double& x : p) x /= sum;
  return p;
}

std::vector<int32_t> top_tokens(const std::vector<double>& p, size_t k) {
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + static_cast<long>(k), order.end(),
                    [&](int32_t a, int32_t b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
  order.resize(k);
  return order;
}

// The second token is drawn from a draft node's logits row whenever the first token matched one of the root's
// children; its joint distribution with the first must still be the target's p(t1) p(t2 | t1).
TEST(EngineSpecCpuStatistics, FirstTwoSampledTokensFollowTheTargetDistribution) {
  auto backend = load_backend(kFixtures + "qwen2_tied_mha");
  const std::vector<int32_t> prompt = {5, 77, 130, 9, 250, 31};
  const std::vector<double> p1 = next_token_probs(*backend, prompt);
  const std::vector<int32_t> firsts = top_tokens(p1, 3);
  // Bins: (t1, t2) for the 3 likeliest t1 and their 2 likeliest t2, each t1 with any other t2, and any other t1.
  std::map<std::pair<int32_t, int32_t>, int> bin_of;
  std::vector<double> expected_p;
  for (int32_t t1 : firsts) {
    std::vector<int32_t> context = prompt;
    context.push_back(t1);
    const std::vector<double> p2 = next_token_probs(*backend, context);
    double rest = 1.0;
    for (int32_t t2 : top_tokens(p2, 2)) {
      bin_of[{t1, t2}] = static_cast<int>(expected_p.size());
      expected_p.push_back(p1[static_cast<size_t>(t1)] * p2[static_cast<size_t>(t2)]);
      rest -= p2[static_cast<size_t>(t2)];
    }
    bin_of[{t1, -1}] = static_cast<int>(expected_p.size());
    expected_p.push_back(p1[static_cast<size_t>(t1)] * rest);
  }
  double other = 1.0;
  for (int32_t t1 : firsts) other -= p1[static_cast<size_t>(t1)];
  expected_p.push_back(other);
  // The draft: the two likeliest first tokens as siblings; when t1 is one of them, t2 comes from its node's row.
  const spec::DraftTree tree = spec::DraftTree::from_beams({{firsts[0]}, {firsts[1]}});
  struct FixedDrafter final : spec::Drafter {
    spec::DraftTree tree;
    size_t prompt_size = 0;
    std::string name() const override { return "fixed"; }
    spec::DraftTree propose(const spec::DraftContext& c) const override {
      return c.tokens.size() == prompt_size ? tree : spec::DraftTree{};
    }
  };
  auto drafter = std::make_shared<FixedDrafter>();
  drafter->tree = tree;
  drafter->prompt_size = prompt.size();

  constexpr int kSamples = 3000;
  std::vector<Job> jobs;
  for (int s = 0; s < kSamples; ++s) {
    SamplingParams p;
    p.temperature = 1.0f;
    p.seed = 1000 + static_cast<uint64_t>(s);
    p.max_tokens = 2;
    p.ignore_eos = true;
    jobs.push_back({prompt, p});
  }
  Engine engine(*backend, config_with(64, 512, drafter));
  const auto outputs = generated_tokens(run_batched(engine, jobs));
  std::vector<int> counts(expected_p.size(), 0);
  for (const auto& t : outputs) {
    auto it = bin_of.find({t[0], t[1]});
    if (it == bin_of.end()) it = bin_of.find({t[0], -1});
    ++counts[it == bin_of.end() ? expected_p.size() - 1 : static_cast<size_t>(it->second)];
  }
  double chi_square = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = expected_p[i] * kSamples;
    ASSERT_GE(e, 5.0) << "bin " << i << ": too rare for the chi-square approximation";
    chi_square += (counts[i] - e) * (counts[i] - e) / e;
  }
  // 10 bins, 9 degrees of freedom: critical value 27.88 at significance 0.001 (the seeds are fixed, so this is
  // deterministic; the threshold is how unlucky a correct engine would need to be with other seeds).
  EXPECT_LT(chi_square, 27.88);
  // Draft rows were actually used: both first tokens of the draft are likely enough to be accepted often.
  EXPECT_GT(engine.stats().spec_accepted_tokens, kSamples / 10);
}

}  // namespace
}  // namespace qed::testing
