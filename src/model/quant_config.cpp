#include "model/quant_config.h"

#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"

namespace qed {
namespace {

using nlohmann::json;

std::string string_field(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::vector<std::string> string_list(const json& object, const char* key, const std::string& source) {
  std::vector<std::string> result;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return result;
  if (!it->is_array()) fail("{}: quantization_config.{} must be a list of module names", source, key);
  for (const json& item : *it) {
    if (!item.is_string()) fail("{}: quantization_config.{} must be a list of module names", source, key);
    result.push_back(item.get<std::string>());
  }
  return result;
}

int int_field(const json& object, const char* key, int fallback) {
  auto it = object.find(key);
  return it != object.end() && it->is_number_integer() ? it->get<int>() : fallback;
}

// weight_block_size: [rows, cols] of one weight block, both positive.
void parse_block_size(const json& value, const std::string& source, QuantizationConfig& config) {
  if (!value.is_array() || value.size() != 2 || !value[0].is_number_integer() || !value[1].is_number_integer() ||
      value[0].get<int64_t>() <= 0 || value[1].get<int64_t>() <= 0 || value[0].get<int64_t>() > (1 << 20) ||
      value[1].get<int64_t>() > (1 << 20)) {
    fail("{}: quantization_config.weight_block_size must be two positive integers [rows, cols], got {}", source,
         value.dump());
  }
  config.block_out = value[0].get<int>();
  config.block_in = value[1].get<int>();
}

void parse_fp8(const json& q, const std::string& source, QuantizationConfig& config) {
  if (q.contains("weight_block_size") && !q["weight_block_size"].is_null()) {
    parse_block_size(q["weight_block_size"], source, config);
  }
  const std::string scheme = string_field(q, "activation_scheme");
  if (scheme == "static") {
    config.activations = ActivationScheme::Static;
  } else if (scheme == "dynamic" || scheme.empty()) {
    config.activations = ActivationScheme::Dynamic;  // vLLM's Fp8Config default
  } else {
    fail("{}: quantization_config.activation_scheme '{}' (expected static or dynamic)", source, scheme);
  }
  if (config.block_wise() && config.activations == ActivationScheme::Static) {
    // vLLM refuses it too: block-wise weights come with per-token-group activations computed on the fly.
    fail("{}: block-wise FP8 (weight_block_size) needs activation_scheme dynamic, got static", source);
  }
  config.method = QuantMethod::Fp8;
  config.ignored = string_list(q, "ignored_layers", source);
  config.ignored_substrings = string_list(q, "modules_to_not_convert", source);
}

void parse_compressed_tensors(const json& q, const std::string& source, QuantizationConfig& config) {
  const auto groups = q.find("config_groups");
  if (groups == q.end() || !groups->is_object() || groups->size() != 1) {
    fail("{}: compressed-tensors quantization_config needs exactly one entry in config_groups", source);
  }
  const json& group = groups->begin().value();
  const auto weights = group.find("weights");
  if (weights == group.end() || !weights->is_object())
    fail("{}: compressed-tensors config group has no 'weights' scheme", source);
  const std::string type = string_field(*weights, "type");
  const std::string strategy = string_field(*weights, "strategy");
  if (int_field(*weights, "num_bits", 0) != 8 || (strategy != "tensor" && strategy != "channel")) {
    fail("{}: compressed-tensors weights must be 8-bit with strategy tensor or channel (got {} bits, '{}')", source,
         int_field(*weights, "num_bits", 0), strategy);
  }
  const auto inputs = group.find("input_activations");
  const bool has_inputs = inputs != group.end() && inputs->is_object();
  if (type == "float") {
    config.method = QuantMethod::Fp8;
    config.activations = ActivationScheme::Dynamic;
    if (has_inputs) {
      if (string_field(*inputs, "type") != "float" || int_field(*inputs, "num_bits", 0) != 8 ||
          string_field(*inputs, "strategy") != "tensor") {
        fail("{}: compressed-tensors FP8 input_activations must be 8-bit float per tensor", source);
      }
      auto dynamic = inputs->find("dynamic");
      bool is_dynamic = dynamic != inputs->end() && dynamic->is_boolean() && dynamic->get<bool>();
      config.activations = is_dynamic ? ActivationScheme::Dynamic : ActivationScheme::Static;
    }
  } else if (type == "int") {
    if (has_inputs) fail("{}: compressed-tensors int8 with quantized activations (W8A8) is not supported", source);
    if (strategy != "channel") fail("{}: int8 weight-only needs per-channel weight scales (strategy channel)", source);
    config.method = QuantMethod::Int8WeightOnly;
  } else {
    fail("{}: compressed-tensors weights of type '{}' are not supported (float or int)", source, type);
  }
  config.ignored = string_list(q, "ignore", source);
}

void parse_modelopt(const json& q, const std::string& source, QuantizationConfig& config) {
  // hf_quant_config.json nests the fields under "quantization"; config.json's copy has them at the top.
  const json& fields = q.contains("quantization") && q["quantization"].is_object() ? q["quantization"] : q;
  const std::string algo = string_field(fields, "quant_algo");
  if (algo != "FP8") fail("{}: modelopt quant_algo '{}' is not supported (FP8 is)", source, algo);
  config.method = QuantMethod::Fp8;
  config.activations = ActivationScheme::Static;  // ModelOpt FP8 always exports calibrated input_scale
  config.ignored = string_list(fields, "exclude_modules", source);
}

}  // namespace

const char* to_string(QuantMethod method) {
  switch (method) {
    case QuantMethod::None:
      return "none";
    case QuantMethod::Fp8:
      return "fp8";
    case QuantMethod::Int8WeightOnly:
      return "int8_wo";
  }
  return "?";
}

bool QuantizationConfig::is_quantized_module(const std::string& name) const {
  if (!quantized()) return false;
  if (!ignored_substrings.empty()) {
    // transformers matches against the parameter name, "<module>.weight": 4.x as a substring of it with digit runs
    // starred, 5.x (should_convert_module) as the whole name, a prefix or a suffix of it; a substring of either
    // spelling covers both.
    const std::string parameter = name + ".weight";
    const std::string starred = std::regex_replace(parameter, std::regex("[0-9]+"), "*");
    for (const std::string& key : ignored_substrings) {
      if (parameter.find(key) != std::string::npos || starred.find(key) != std::string::npos) return false;
    }
  }
  for (const std::string& pattern : ignored) {
    if (pattern.rfind("re:", 0) == 0) {
      try {
        if (std::regex_match(name, std::regex(pattern.substr(3)))) return false;
      } catch (const std::regex_error&) {
        fail("quantization_config: ignore pattern '{}' is not a valid regex", pattern);
      }
    } else if (name == pattern || (name.size() > pattern.size() && name.compare(0, pattern.size(), pattern) == 0 &&
                                   name[pattern.size()] == '.')) {
      return false;
    }
  }
  return true;
}

QuantizationConfig QuantizationConfig::from_json(const json* value, const std::string& source) {
  QuantizationConfig config;
  if (!value || value->is_null()) return config;
  if (!value->is_object()) fail("{}: quantization_config must be an object", source);
  config.format = string_field(*value, "quant_method");
  if (config.format == "fp8") {
    parse_fp8(*value, source, config);
  } else if (config.format == "compressed-tensors") {
    parse_compressed_tensors(*value, source, config);
  } else if (config.format == "modelopt") {
    parse_modelopt(*value, source, config);
  } else {
    fail("{}: quantization_config.quant_method '{}' is not supported (fp8, compressed-tensors, modelopt)", source,
         config.format);
  }
  return config;
}

}  // namespace qed
