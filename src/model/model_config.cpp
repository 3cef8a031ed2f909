#include "model/model_config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap_file.h"

namespace qed {

namespace {

using nlohmann::json;

// A key that is absent or explicitly null counts as "not given" (transformers treats both the same way).
const json* field(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return nullptr;
  return &*it;
}

// A JSON value as it appears in an error message: compact, cut short, never throwing on bad UTF-8.
std::string describe(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  return text.size() > 64 ? text.substr(0, 61) + "..." : text;
}

int as_int(const json& value, const std::string& source, const std::string& key) {
  if (!value.is_number_integer()) fail("{}: '{}' must be an integer, got {}", source, key, describe(value));
  if (value.is_number_unsigned()) {
    if (value.get<uint64_t>() > uint64_t(std::numeric_limits<int>::max())) {
      fail("{}: '{}' is out of range ({})", source, key, describe(value));
    }
    return int(value.get<uint64_t>());
  }
  int64_t v = value.get<int64_t>();
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
    fail("{}: '{}' is out of range ({})", source, key, v);
  }
  return int(v);
}

int required_int(const json& config, const char* key, const std::string& source) {
  const json* value = field(config, key);
  if (!value) fail("{}: missing '{}'", source, key);
  return as_int(*value, source, key);
}

int optional_int(const json& config, const char* key, int fallback, const std::string& source) {
  const json* value = field(config, key);
  return value ? as_int(*value, source, key) : fallback;
}

float as_float(const json& value, const std::string& source, const std::string& key) {
  if (!value.is_number()) fail("{}: '{}' must be a number, got {}", source, key, describe(value));
  return float(value.get<double>());
}

float optional_float(const json& config, const char* key, float fallback, const std::string& source) {
  const json* value = field(config, key);
  return value ? as_float(*value, source, key) : fallback;
}

bool optional_bool(const json& config, const char* key, bool fallback, const std::string& source) {
  const json* value = field(config, key);
  if (!value) return fallback;
  if (!value->is_boolean()) fail("{}: '{}' must be true or false, got {}", source, key, describe(*value));
  return value->get<bool>();
}

struct ArchitectureInfo {
  Architecture architecture;
  const char* model_type;
  const char* causal_lm_class;
};
constexpr ArchitectureInfo kArchitectures[] = {
    {Architecture::Qwen2, "qwen2", "Qwen2ForCausalLM"},
    {Architecture::Llama, "llama", "LlamaForCausalLM"},
};

const ArchitectureInfo& architecture_of(const json& config, const std::string& source) {
  const json* architectures = field(config, "architectures");
  if (architectures && (!architectures->is_array() || !std::all_of(architectures->begin(), architectures->end(),
                                                                   [](const json& a) { return a.is_string(); }))) {
    fail("{}: 'architectures' must be a list of class names", source);
  }
  const json* model_type = field(config, "model_type");
  if (model_type && !model_type->is_string()) fail("{}: 'model_type' must be a string", source);
  const ArchitectureInfo* found = nullptr;
  if (model_type) {
    const auto& type = model_type->get_ref<const std::string&>();
    for (const auto& info : kArchitectures) {
      if (type == info.model_type) found = &info;
    }
    if (!found) fail("{}: unsupported model_type '{}' (supported: qwen2, llama)", source, type);
  } else if (architectures && !architectures->empty()) {
    // Old configs may lack model_type; transformers then falls back to the architecture class.
    const auto& name = architectures->front().get_ref<const std::string&>();
    for (const auto& info : kArchitectures) {
      if (name == info.causal_lm_class) found = &info;
    }
    if (!found) fail("{}: unsupported architecture '{}' (supported: Qwen2ForCausalLM, LlamaForCausalLM)", source, name);
  } else {
    fail("{}: missing 'model_type' (supported: qwen2, llama)", source);
  }
  // A qwen2-typed reward or classification model has another head; running it as a causal LM would be wrong.
  if (architectures && !architectures->empty()) {
    const auto& name = architectures->front().get_ref<const std::string&>();
    if (name != found->causal_lm_class) {
      fail("{}: unsupported architecture '{}' for model_type '{}' (supported: {})", source, name, found->model_type,
           found->causal_lm_class);
    }
  }
  return *found;
}

DType dtype_of(const json& config, const std::string& source) {
  // transformers >= 5 writes `dtype`; older versions `torch_dtype`.
  const char* key = field(config, "dtype") ? "dtype" : "torch_dtype";
  const json* value = field(config, key);
  if (!value) return DType::BF16;
  if (!value->is_string()) fail("{}: '{}' must be a string, got {}", source, key, describe(*value));
  std::string name = value->get<std::string>();
  if (name.rfind("torch.", 0) == 0) name = name.substr(6);
  if (name == "bfloat16") return DType::BF16;
  if (name == "float16" || name == "half") return DType::F16;
  if (name == "float32" || name == "float") return DType::F32;
  fail("{}: unsupported {} '{}' (supported: bfloat16, float16, float32)", source, key, name);
}

// RoPE settings come in two spellings: transformers < 5 writes `rope_theta` at top level and `rope_scaling`
// ({"type" or "rope_type": ..., factor, ...} or null); transformers >= 5 writes `rope_parameters`
// ({"rope_type", "rope_theta", factor, ...}). As in transformers, `rope_scaling` wins when both are present.
void read_rope(const json& config, const std::string& source, ModelConfig& out) {
  const json* top_theta = field(config, "rope_theta");
  const char* key = field(config, "rope_scaling") ? "rope_scaling" : "rope_parameters";
  const json* params = field(config, key);
  out.rope_theta = top_theta ? as_float(*top_theta, source, "rope_theta") : 10000.0f;
  out.rope_scaling = RopeScaling{};
  if (!params) return;
  if (!params->is_object()) fail("{}: '{}' must be an object or null", source, key);
  auto name = [&](const char* field_name) { return fmt::format("{}.{}", key, field_name); };
  if (const json* theta = field(*params, "rope_theta")) out.rope_theta = as_float(*theta, source, name("rope_theta"));

  const json* type = field(*params, "rope_type");
  const char* type_key = "rope_type";
  if (!type) {
    type = field(*params, "type");
    type_key = "type";
  }
  std::string rope_type = "default";
  if (type) {
    if (!type->is_string()) fail("{}: '{}' must be a string", source, name(type_key));
    rope_type = type->get<std::string>();
  }
  if (rope_type == "default") return;
  if (rope_type != "llama3") {
    fail("{}: unsupported rope type '{}' in '{}' (supported: default, llama3)", source, rope_type, key);
  }
  RopeScaling& scaling = out.rope_scaling;
  scaling.type = "llama3";
  auto required_float = [&](const char* field_name) {
    const json* value = field(*params, field_name);
    if (!value) fail("{}: llama3 rope scaling needs '{}'", source, name(field_name));
    return as_float(*value, source, name(field_name));
  };
  scaling.factor = required_float("factor");
  scaling.low_freq_factor = required_float("low_freq_factor");
  scaling.high_freq_factor = required_float("high_freq_factor");
  const json* original = field(*params, "original_max_position_embeddings");
  if (!original) fail("{}: llama3 rope scaling needs '{}'", source, name("original_max_position_embeddings"));
  scaling.original_max_position_embeddings = as_int(*original, source, name("original_max_position_embeddings"));
}

std::vector<int> token_ids(const json& value, const std::string& source, const char* key) {
  std::vector<int> ids;
  if (value.is_array()) {
    for (const auto& id : value) ids.push_back(as_int(id, source, key));
  } else {
    ids.push_back(as_int(value, source, key));
  }
  return ids;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& config, const std::string& source) {
  if (!config.is_object()) fail("{}: config must be a JSON object", source);
  const ArchitectureInfo& arch = architecture_of(config, source);
  const bool qwen2 = arch.architecture == Architecture::Qwen2;

  ModelConfig c;
  c.architecture = arch.architecture;
  c.model_type = arch.model_type;
  // Sizes have defaults in transformers (a 7B shape), but a config that omits them is broken; say so rather than
  // load a checkpoint against an invented shape.
  c.hidden_size = required_int(config, "hidden_size", source);
  c.num_layers = required_int(config, "num_hidden_layers", source);
  c.num_heads = required_int(config, "num_attention_heads", source);
  c.intermediate_size = required_int(config, "intermediate_size", source);
  c.vocab_size = required_int(config, "vocab_size", source);
  // Defaults below are the transformers 5.x config classes' (Qwen2Config, LlamaConfig). Qwen2Config's
  // num_key_value_heads defaults to 32 when the key is absent and to num_attention_heads when it is null.
  if (qwen2 && !config.contains("num_key_value_heads")) {
    c.num_kv_heads = 32;
  } else {
    c.num_kv_heads = optional_int(config, "num_key_value_heads", c.num_heads, source);
  }
  if (const json* head_dim = field(config, "head_dim")) {
    c.head_dim = as_int(*head_dim, source, "head_dim");
  } else {
    if (c.num_heads <= 0) fail("{}: 'num_attention_heads' must be positive, got {}", source, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  c.max_position_embeddings = optional_int(config, "max_position_embeddings", qwen2 ? 32768 : 2048, source);
  c.rms_norm_eps = optional_float(config, "rms_norm_eps", 1e-6f, source);
  read_rope(config, source, c);
  c.tie_word_embeddings = optional_bool(config, "tie_word_embeddings", false, source);
  // Qwen2Attention builds q/k/v with bias=True unconditionally and its MLP without bias; Llama reads both flags.
  c.attention_bias = qwen2 ? true : optional_bool(config, "attention_bias", false, source);
  c.mlp_bias = qwen2 ? false : optional_bool(config, "mlp_bias", false, source);
  if (qwen2 && optional_bool(config, "use_sliding_window", false, source)) {
    fail("{}: use_sliding_window=true is not supported (sliding-window attention layers)", source);
  }
  c.dtype = dtype_of(config, source);
  // LlamaConfig defaults bos/eos to 1/2 (the original Llama tokenizer); Qwen2Config leaves them unset.
  if (!config.contains("bos_token_id")) {
    c.bos_token_id = qwen2 ? -1 : 1;
  } else {
    c.bos_token_id = optional_int(config, "bos_token_id", -1, source);
  }
  if (!config.contains("eos_token_id")) {
    if (!qwen2) c.eos_token_ids = {2};
  } else if (const json* eos = field(config, "eos_token_id")) {
    c.eos_token_ids = token_ids(*eos, source, "eos_token_id");
  }
  c.quantization = QuantizationConfig::from_json(field(config, "quantization_config"), source);
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& config_json_path) {
  std::string text = read_text_file(config_json_path);
  json config;
  try {
    config = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", config_json_path, e.what());
  }
  return from_json(config, config_json_path);
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](const char* key, int value) {
    if (value <= 0) fail("{}: '{}' must be positive, got {}", source, key, value);
  };
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_layers);
  positive("num_attention_heads", num_heads);
  positive("num_key_value_heads", num_kv_heads);
  positive("head_dim", head_dim);
  positive("intermediate_size", intermediate_size);
  positive("vocab_size", vocab_size);
  positive("max_position_embeddings", max_position_embeddings);
  if (num_heads % num_kv_heads != 0) {
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source, num_heads, num_kv_heads);
  }
  // Rotary embeddings rotate pairs of dimensions.
  if (head_dim % 2 != 0) fail("{}: head_dim {} must be even (rotary embeddings)", source, head_dim);
  if (!(rms_norm_eps > 0.0f)) fail("{}: 'rms_norm_eps' must be positive, got {}", source, rms_norm_eps);
  if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) {
    fail("{}: 'rope_theta' must be a positive number, got {}", source, rope_theta);
  }
  if (rope_scaling.type == "llama3") {
    if (!(rope_scaling.factor >= 1.0f))
      fail("{}: llama3 rope 'factor' must be >= 1, got {}", source, rope_scaling.factor);
    if (!(rope_scaling.low_freq_factor > 0.0f) || !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor)) {
      fail("{}: llama3 rope needs 0 < low_freq_factor < high_freq_factor, got {} and {}", source,
           rope_scaling.low_freq_factor, rope_scaling.high_freq_factor);
    }
    if (rope_scaling.original_max_position_embeddings <= 0) {
      fail("{}: llama3 rope 'original_max_position_embeddings' must be positive, got {}", source,
           rope_scaling.original_max_position_embeddings);
    }
  } else if (rope_scaling.type != "default") {
    fail("{}: unsupported rope type '{}' (supported: default, llama3)", source, rope_scaling.type);
  }
  auto check_token = [&](const char* key, int id) {
    if (id < 0 || id >= vocab_size) fail("{}: '{}' {} is outside the vocabulary [0, {})", source, key, id, vocab_size);
  };
  if (bos_token_id != -1) check_token("bos_token_id", bos_token_id);
  for (int id : eos_token_ids) check_token("eos_token_id", id);
}

}  // namespace qed
