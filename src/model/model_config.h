#pragma once
// config.json → ModelConfig for the decoder-only architectures qed runs (Qwen2/Qwen2.5, Llama).
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/quant_config.h"

namespace qed {

enum class Architecture { Qwen2, Llama };

struct RopeScaling {
  // "default" (none) or "llama3"; other HF rope types are rejected with a clear error.
  std::string type = "default";
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::Qwen2;
  std::string model_type;  // as written in config.json ("qwen2", "llama")
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // config's head_dim if present, else hidden_size / num_heads
  int intermediate_size = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2: always; Llama: config's attention_bias)
  bool mlp_bias = false;
  DType dtype = DType::BF16;  // `torch_dtype` or (transformers >= 5) `dtype`
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  QuantizationConfig quantization;  // config.json's quantization_config (none for a bf16 checkpoint)

  // `source` names the file in error messages.
  static ModelConfig from_json(const nlohmann::json& json, const std::string& source);
  static ModelConfig from_file(const std::string& config_json_path);
  // Checks invariants (heads divide, sizes positive); throws qed::Error naming `source`.
  void validate(const std::string& source) const;
};

}  // namespace qed
