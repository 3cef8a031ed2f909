#pragma once
// The ReDrafter draft head (apple/ml-recurrent-drafter `modeling_drafter.Drafter`), CPU reference in fp32.
//   state:  s_t = SiLU(rnn_w · E(g_{t-1}) + rnn_u · s_{t-1} + b_u)   (rnn = true)    or  s_t = E(g_{t-1}) + s_{t-1}
//   logits: lm_head(input_proj?(context ⊕ s_t)), lm_head = num_draft_layers × [x + SiLU(W x + b)], then W_vocab x
// context is the base model's final-norm hidden state at the last accepted token, E the base model's embedding.
// Before the log-softmax the logits are shifted by their max and all but the top 50 set to -50000 (RD's
// maintain_logits + warp_logits), which beam search then ranks.
// Checkpoints are a directory with RD's config.json (model_type "recurrent_drafting_drafter") and model.safetensors
// with RD's tensor names, so heads trained there load here and ours load there.
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace qed::spec {

struct RedrafterConfig {
  int vocab_size = 0;
  int hidden_size = 0;  // the base model's
  int exit_dim = 0;     // NS: 2 × hidden_size (then there is no input_proj)
  int num_draft_layers = 0;
  int num_lookback_tokens = -1;  // in RD's config, unused by the model
  bool rnn = true;

  static RedrafterConfig from_file(const std::string& path);
  std::string to_json() const;
  bool has_input_proj() const { return exit_dim != 2 * hidden_size; }
};

struct DraftBeams {
  std::vector<std::vector<int32_t>> tokens;  // width beams of length - 1 draft tokens (the init token excluded)
  std::vector<float> log_p;                  // each beam's log-probability under the head
};

class RedrafterHead {
 public:
  explicit RedrafterHead(RedrafterConfig config);  // zero weights
  static RedrafterHead load(const std::string& dir);
  void save(const std::string& dir) const;
  // Uniform(-scale, scale) weights from `seed`: tests and the trainer's initialisation.
  static RedrafterHead random(RedrafterConfig config, uint64_t seed, float scale);

  const RedrafterConfig& config() const { return config_; }

  // One recurrent update of `state` (hidden_size) by the embedding of the previous token.
  void update_state(std::span<const float> token_embedding, std::span<float> state) const;
  // Log-probabilities over the vocabulary after RD's max shift and top-k warp.
  void log_probs(std::span<const float> context, std::span<const float> state, std::span<float> out) const;
  // RD's beam_search_candidates: `length` - 1 draft steps below `init_token`, keeping the `width` best beams by
  // summed log-probability (ties: lower beam index, then lower token id). `embeddings`: vocab × hidden_size.
  DraftBeams beam_search(std::span<const float> context, int32_t init_token, std::span<const float> embeddings,
                         int width, int length) const;

  // Weights, row-major in the nn.Linear layout [out, in].
  struct Linear {
    std::vector<float> weight, bias;  // bias empty when the layer has none
    int in = 0, out = 0;
  };
  Linear input_proj;               // only when has_input_proj()
  std::vector<Linear> res_blocks;  // lm_head.{i}.linear
  Linear vocab_proj;               // lm_head.{num_draft_layers}
  Linear rnn_u, rnn_w;             // only when rnn

  // Every linear layer with its reference tensor-name prefix ("lm_head.0.linear"), in checkpoint order.
  std::vector<std::pair<std::string, Linear*>> linears();
  std::vector<std::pair<std::string, const Linear*>> linears() const;

 private:
  // lm_head(input_proj?(x)) for `rows` inputs x (each context ⊕ state, 2 × hidden_size): rows × vocab raw logits.
  void logits_rows(const float* inputs, size_t rows, float* out) const;

  RedrafterConfig config_;
};

// y = W x + b for one vector.
void apply_linear(const RedrafterHead::Linear& layer, std::span<const float> x, std::span<float> y);

}  // namespace qed::spec
