#include "spec/redrafter_head.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed::spec {
namespace {

constexpr float kLog0 = -50000.0f;  // RD's LOG_0: what warp_logits writes outside the top k
constexpr int kTopK = 50;           // RD's warp_logits default

float silu(float x) {
  return x / (1.0f + std::exp(-x));
}

RedrafterHead::Linear make_linear(int in, int out, bool bias) {
  RedrafterHead::Linear l;
  l.in = in;
  l.out = out;
  l.weight.assign(static_cast<size_t>(in) * static_cast<size_t>(out), 0.0f);
  if (bias) l.bias.assign(static_cast<size_t>(out), 0.0f);
  return l;
}

// Every linear layer with its reference name, in checkpoint order (Head: RedrafterHead, const or not).
template <typename Head, typename F>
void for_each_linear(Head& head, F&& f) {
  const RedrafterConfig& c = head.config();
  if (c.has_input_proj()) f("input_proj", head.input_proj);
  for (int i = 0; i < c.num_draft_layers; ++i) {
    f(fmt::format("lm_head.{}.linear", i), head.res_blocks[static_cast<size_t>(i)]);
  }
  f(fmt::format("lm_head.{}", c.num_draft_layers), head.vocab_proj);
  if (c.rnn) {
    f("rnn_u", head.rnn_u);
    f("rnn_w", head.rnn_w);
  }
}

// y[r] = W x[r] + b for `rows` vectors at once: each weight row is read once for all of them (beam search runs the
// head on every beam per step, and the vocab projection dominates its memory traffic).
void apply_linear_rows(const RedrafterHead::Linear& layer, const float* x, size_t rows, float* y) {
  const size_t in = static_cast<size_t>(layer.in), out = static_cast<size_t>(layer.out);
  for (size_t o = 0; o < out; ++o) {
    const float* w = layer.weight.data() + o * in;
    const float bias = layer.bias.empty() ? 0.0f : layer.bias[o];
    for (size_t r = 0; r < rows; ++r)
      y[r * out + o] = cpu::dot(x + r * in, w, static_cast<int>(in)) + bias;  // the CPU backend's dot
  }
}

// RD's maintain_logits + warp_logits(top_k=50) + log_softmax, in place on one row.
void warp_and_log_softmax(std::span<float> out) {
  const float max = *std::max_element(out.begin(), out.end());
  for (float& v : out) v -= max;
  const size_t k = std::min(static_cast<size_t>(kTopK), out.size());
  std::vector<float> sorted(out.begin(), out.end());
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<long>(k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[k - 1];
  for (float& v : out) {
    if (v < kth) v = kLog0;  // ties with the k-th value stay, as torch's `logits < topk[..., -1]`
  }
  double sum = 0.0;
  for (float v : out) sum += std::exp(double(v));
  const float log_sum = static_cast<float>(std::log(sum));
  for (float& v : out) v -= log_sum;
}

}  // namespace

void apply_linear(const RedrafterHead::Linear& layer, std::span<const float> x, std::span<float> y) {
  apply_linear_rows(layer, x.data(), 1, y.data());
}

RedrafterConfig RedrafterConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", path, e.what());
  }
  RedrafterConfig c;
  try {
    c.vocab_size = j.at("vocab_size").get<int>();
    c.hidden_size = j.at("hidden_size").get<int>();
    c.exit_dim = j.at("exit_dim").get<int>();
    c.num_draft_layers = j.at("num_draft_layers").get<int>();
    c.num_lookback_tokens = j.value("num_lookback_tokens", -1);
    c.rnn = j.value("rnn", false);  // RD's DrafterConfig default
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", path, e.what());
  }
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.exit_dim <= 0 || c.num_draft_layers < 0) {
    fail("{}: vocab_size, hidden_size, exit_dim must be positive and num_draft_layers >= 0", path);
  }
  return c;
}

std::string RedrafterConfig::to_json() const {
  nlohmann::json j = {{"model_type", "recurrent_drafting_drafter"},
                      {"architectures", {"Drafter"}},
                      {"vocab_size", vocab_size},
                      {"hidden_size", hidden_size},
                      {"exit_dim", exit_dim},
                      {"num_draft_layers", num_draft_layers},
                      {"num_lookback_tokens", num_lookback_tokens},
                      {"rnn", rnn},
                      {"torch_dtype", "float32"}};
  return j.dump(2) + "\n";
}

RedrafterHead::RedrafterHead(RedrafterConfig config) : config_(config) {
  const int h = config_.hidden_size, e = config_.exit_dim;
  if (config_.has_input_proj()) input_proj = make_linear(2 * h, e, true);
  for (int i = 0; i < config_.num_draft_layers; ++i) res_blocks.push_back(make_linear(e, e, true));
  vocab_proj = make_linear(e, config_.vocab_size, false);
  if (config_.rnn) {
    rnn_u = make_linear(h, h, true);
    rnn_w = make_linear(h, h, false);
  }
}

std::vector<std::pair<std::string, RedrafterHead::Linear*>> RedrafterHead::linears() {
  std::vector<std::pair<std::string, Linear*>> out;
  for_each_linear(*this, [&](const std::string& name, Linear& l) { out.emplace_back(name, &l); });
  return out;
}

std::vector<std::pair<std::string, const RedrafterHead::Linear*>> RedrafterHead::linears() const {
  std::vector<std::pair<std::string, const Linear*>> out;
  for_each_linear(*this, [&](const std::string& name, const Linear& l) { out.emplace_back(name, &l); });
  return out;
}

RedrafterHead RedrafterHead::random(RedrafterConfig config, uint64_t seed, float scale) {
  RedrafterHead head(config);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  for_each_linear(head, [&](const std::string&, Linear& l) {
    for (float& w : l.weight) w = dist(rng);
    for (float& b : l.bias) b = dist(rng);
  });
  return head;
}

RedrafterHead RedrafterHead::load(const std::string& dir) {
  RedrafterHead head(RedrafterConfig::from_file(dir + "/config.json"));
  const Checkpoint checkpoint = Checkpoint::open(dir);
  for_each_linear(head, [&](const std::string& name, Linear& l) {
    const TensorInfo& w = checkpoint.get(name + ".weight");
    if (w.shape != std::vector<int64_t>{l.out, l.in}) {
      fail("{}: tensor '{}.weight' has shape [{}], expected [{}, {}]", dir, name, fmt::join(w.shape, ", "), l.out,
           l.in);
    }
    l.weight = tensor_to_f32(w);
    if (!l.bias.empty()) {
      const TensorInfo& b = checkpoint.get(name + ".bias");
      if (b.shape != std::vector<int64_t>{l.out}) fail("{}: tensor '{}.bias' has the wrong shape", dir, name);
      l.bias = tensor_to_f32(b);
    }
  });
  return head;
}

void RedrafterHead::save(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  std::vector<TensorToWrite> tensors;
  for_each_linear(*this, [&](const std::string& name, const Linear& l) {
    tensors.push_back({name + ".weight", DType::F32, {l.out, l.in}, l.weight.data()});
    if (!l.bias.empty()) tensors.push_back({name + ".bias", DType::F32, {l.out}, l.bias.data()});
  });
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  std::ofstream out(dir + "/config.json");
  out << config_.to_json();
  if (!out) fail("{}/config.json: cannot write", dir);
}

void RedrafterHead::update_state(std::span<const float> token_embedding, std::span<float> state) const {
  const size_t h = static_cast<size_t>(config_.hidden_size);
  if (!config_.rnn) {
    for (size_t i = 0; i < h; ++i) state[i] += token_embedding[i];
    return;
  }
  std::vector<float> w(h), u(h);
  apply_linear(rnn_w, token_embedding, w);
  apply_linear(rnn_u, state, u);
  for (size_t i = 0; i < h; ++i) state[i] = silu(w[i] + u[i]);
}

void RedrafterHead::logits_rows(const float* inputs, size_t rows, float* out) const {
  const size_t h2 = 2 * static_cast<size_t>(config_.hidden_size), e = static_cast<size_t>(config_.exit_dim);
  std::vector<float> x(rows * e), y(rows * e);
  if (config_.has_input_proj()) {
    apply_linear_rows(input_proj, inputs, rows, x.data());
  } else {
    std::copy_n(inputs, rows * h2, x.data());
  }
  for (const Linear& block : res_blocks) {
    apply_linear_rows(block, x.data(), rows, y.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += silu(y[i]);
  }
  apply_linear_rows(vocab_proj, x.data(), rows, out);
}

void RedrafterHead::log_probs(std::span<const float> context, std::span<const float> state,
                              std::span<float> out) const {
  const size_t h = static_cast<size_t>(config_.hidden_size);
  std::vector<float> x(context.begin(), context.begin() + static_cast<long>(h));
  x.insert(x.end(), state.begin(), state.begin() + static_cast<long>(h));
  logits_rows(x.data(), 1, out.data());
  warp_and_log_softmax(out);
}

DraftBeams RedrafterHead::beam_search(std::span<const float> context, int32_t init_token,
                                      std::span<const float> embeddings, int width, int length) const {
  if (width < 1 || length < 2) fail("redrafter: beam width {} must be >= 1 and length {} >= 2", width, length);
  const size_t h = static_cast<size_t>(config_.hidden_size);
  const size_t vocab = static_cast<size_t>(config_.vocab_size);
  if (context.size() != h) fail("redrafter: context has {} values, hidden_size is {}", context.size(), h);
  if (embeddings.size() != vocab * h) fail("redrafter: embedding table is not vocab_size × hidden_size");
  if (init_token < 0 || static_cast<size_t>(init_token) >= vocab) fail("redrafter: init token {} outside", init_token);
  const size_t w = static_cast<size_t>(width);
  std::vector<std::vector<int32_t>> beams(w, std::vector<int32_t>{init_token});
  // Only beam 0 is live at first (the others start at log 0), so the first step spreads beam 0's best tokens.
  std::vector<float> log_p_beam(w, kLog0);
  log_p_beam[0] = 0.0f;
  std::vector<std::vector<float>> states(w, std::vector<float>(h, 0.0f));
  std::vector<float> scores(w * vocab), inputs(w * 2 * h), logits(w * vocab);
  for (int step = 0; step + 1 < length; ++step) {
    for (size_t b = 0; b < w; ++b) {
      const size_t last = static_cast<size_t>(beams[b].back());
      update_state(embeddings.subspan(last * h, h), states[b]);
      std::copy(context.begin(), context.end(), inputs.begin() + static_cast<long>(b * 2 * h));
      std::copy(states[b].begin(), states[b].end(), inputs.begin() + static_cast<long>(b * 2 * h + h));
    }
    logits_rows(inputs.data(), w, logits.data());  // all beams in one pass over the weights
    for (size_t b = 0; b < w; ++b) {
      const std::span<float> row(logits.data() + b * vocab, vocab);
      warp_and_log_softmax(row);
      for (size_t t = 0; t < vocab; ++t) scores[b * vocab + t] = row[t] + log_p_beam[b];
    }
    std::vector<size_t> order(scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + static_cast<long>(w), order.end(),
                      [&](size_t a, size_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); });
    std::vector<std::vector<int32_t>> next_beams;
    std::vector<std::vector<float>> next_states;
    std::vector<float> next_log_p;
    for (size_t i = 0; i < w; ++i) {
      const size_t beam = order[i] / vocab, token = order[i] % vocab;
      next_beams.push_back(beams[beam]);
      next_beams.back().push_back(static_cast<int32_t>(token));
      next_states.push_back(states[beam]);
      next_log_p.push_back(scores[order[i]]);
    }
    beams = std::move(next_beams);
    states = std::move(next_states);
    log_p_beam = std::move(next_log_p);
  }
  DraftBeams out;
  for (auto& beam : beams) out.tokens.emplace_back(beam.begin() + 1, beam.end());
  out.log_p = log_p_beam;
  return out;
}

}  // namespace qed::spec
