#include "backend/cpu/random_weights.h"

#include <unistd.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed {
namespace {

// The tensors of one model, generated in fp32 and owned here while CpuBackend copies them.
class RandomTensors {
 public:
  explicit RandomTensors(uint64_t seed) : rng_(seed) {}

  void uniform(const std::string& name, std::vector<int64_t> shape, float a) {
    std::vector<float>& data = add(name, std::move(shape));
    std::uniform_real_distribution<float> dist(-a, a);
    for (float& v : data) v = dist(rng_);
  }
  void ones(const std::string& name, std::vector<int64_t> shape) {
    std::vector<float>& data = add(name, std::move(shape));
    std::fill(data.begin(), data.end(), 1.0f);
  }
  std::vector<TensorInfo> infos() const { return infos_; }

 private:
  std::vector<float>& add(const std::string& name, std::vector<int64_t> shape) {
    size_t numel = 1;
    for (int64_t d : shape) numel *= size_t(d);
    std::vector<float>& data = storage_.emplace_back(numel);
    TensorInfo info;
    info.name = name;
    info.dtype = DType::F32;
    info.shape = std::move(shape);
    info.nbytes = numel * sizeof(float);
    info.data = reinterpret_cast<const unsigned char*>(data.data());
    infos_.push_back(std::move(info));
    return data;
  }

  std::mt19937_64 rng_;
  std::vector<std::vector<float>> storage_;  // a vector's buffer keeps its address when the outer vector grows
  std::vector<TensorInfo> infos_;
};

size_t parameter_count(const ModelConfig& c) {
  const size_t hidden = size_t(c.hidden_size);
  const size_t q_dim = size_t(c.num_heads) * size_t(c.head_dim);
  const size_t kv_dim = size_t(c.num_kv_heads) * size_t(c.head_dim);
  const size_t inter = size_t(c.intermediate_size);
  const size_t per_layer = hidden * (q_dim + 2 * kv_dim) + q_dim * hidden + 3 * hidden * inter + 2 * hidden +
                           (q_dim + 2 * kv_dim) + hidden + 2 * inter;
  return size_t(c.vocab_size) * hidden * (c.tie_word_embeddings ? 1 : 2) + hidden + per_layer * size_t(c.num_layers);
}

}  // namespace

std::unique_ptr<CpuBackend> make_random_cpu_backend(const ModelConfig& config, uint64_t seed,
                                                    const CpuBackendOptions& options) {
  config.validate("random weights");
  if (config.quantization.quantized()) {
    fail(
        "random weights on --backend cpu are unquantized; this config has a quantization_config (use --backend cuda "
        "with --dtype fp8|int8_wo, or a config without one)");
  }
  // The generated fp32 tensors and CpuBackend's own fp32 copies are alive together while it loads.
  const double needed = 2.0 * double(parameter_count(config)) * sizeof(float);
  const double physical = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (physical > 0 && needed > physical / 2) {
    fail(
        "random weights of this shape need {:.1f} GB of host memory on --backend cpu (this machine has {:.1f} GB); "
        "use --backend cuda",
        needed / 1e9, physical / 1e9);
  }
  const int64_t hidden = config.hidden_size;
  const int64_t q_dim = int64_t(config.num_heads) * config.head_dim;
  const int64_t kv_dim = int64_t(config.num_kv_heads) * config.head_dim;
  const int64_t inter = config.intermediate_size;
  const int64_t vocab = config.vocab_size;
  const float a = 0.02f * 1.7320508f;  // uniform [-a, a) has the standard deviation 0.02 of HF's init
  const bool o_bias = config.attention_bias && config.architecture == Architecture::Llama;

  RandomTensors t(seed);
  t.uniform("model.embed_tokens.weight", {vocab, hidden}, a);
  if (!config.tie_word_embeddings) t.uniform("lm_head.weight", {vocab, hidden}, a);
  t.ones("model.norm.weight", {hidden});
  for (int i = 0; i < config.num_layers; ++i) {
    auto name = [i](const char* suffix) { return layer_tensor_name(i, suffix); };
    t.ones(name("input_layernorm.weight"), {hidden});
    t.ones(name("post_attention_layernorm.weight"), {hidden});
    t.uniform(name("self_attn.q_proj.weight"), {q_dim, hidden}, a);
    t.uniform(name("self_attn.k_proj.weight"), {kv_dim, hidden}, a);
    t.uniform(name("self_attn.v_proj.weight"), {kv_dim, hidden}, a);
    t.uniform(name("self_attn.o_proj.weight"), {hidden, q_dim}, a);
    if (config.attention_bias) {
      t.uniform(name("self_attn.q_proj.bias"), {q_dim}, a);
      t.uniform(name("self_attn.k_proj.bias"), {kv_dim}, a);
      t.uniform(name("self_attn.v_proj.bias"), {kv_dim}, a);
    }
    if (o_bias) t.uniform(name("self_attn.o_proj.bias"), {hidden}, a);
    t.uniform(name("mlp.gate_proj.weight"), {inter, hidden}, a);
    t.uniform(name("mlp.up_proj.weight"), {inter, hidden}, a);
    t.uniform(name("mlp.down_proj.weight"), {hidden, inter}, a);
    if (config.mlp_bias) {
      t.uniform(name("mlp.gate_proj.bias"), {inter}, a);
      t.uniform(name("mlp.up_proj.bias"), {inter}, a);
      t.uniform(name("mlp.down_proj.bias"), {hidden}, a);
    }
  }
  const Checkpoint checkpoint = Checkpoint::from_memory("random weights", t.infos());
  return std::make_unique<CpuBackend>(config, checkpoint, options);
}

}  // namespace qed
