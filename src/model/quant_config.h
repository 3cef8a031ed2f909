#pragma once
// config.json's `quantization_config`: which linear layers of a checkpoint hold quantized weights, and what their
// scales mean. Three writers' conventions are read, as vLLM reads them (docs/quantize.md cites the code):
//   quant_method "fp8"                vLLM/AutoFP8: per-tensor E4M3 weights, activation_scheme static|dynamic,
//                                     ignored_layers; with weight_block_size [B0, B1] block-wise FP8 (DeepSeek-V3,
//                                     transformers' FineGrainedFP8Config): one weight_scale_inv per B0 × B1 block,
//                                     dynamic activations per (token, B1 columns), modules_to_not_convert
//   quant_method "compressed-tensors" llm-compressor: one config group of 8-bit "float" (FP8, tensor or channel
//                                     weights) or "int" weights (int8, channel; without input_activations this is
//                                     int8 weight-only), `ignore`
//   quant_method "modelopt"           TensorRT ModelOpt: quant_algo "FP8", exclude_modules
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace qed {

enum class QuantMethod { None, Fp8, Int8WeightOnly };
enum class ActivationScheme { None, Static, Dynamic };

struct QuantizationConfig {
  QuantMethod method = QuantMethod::None;
  ActivationScheme activations = ActivationScheme::None;  // Fp8 only: static = calibrated input_scale tensors
  std::string format;                                     // the quant_method as written, for messages
  // Modules that stay unquantized: exact names ("lm_head", "model.layers.0.mlp.down_proj"), a prefix of whole name
  // components ("model.layers.0"), or "re:<regex>" (compressed-tensors' spelling).
  std::vector<std::string> ignored;
  // transformers' modules_to_not_convert: a module is skipped when an entry is a substring of its parameter name
  // ("<module>.weight"), as written or with every run of digits replaced by '*' (transformers 4.x's
  // _replace_with_fp8_linear rule), e.g. "lm_head", "layers.1.mlp" or "layers.*.mlp.down_proj".
  std::vector<std::string> ignored_substrings;
  // Block-wise FP8 (quant_method fp8 with weight_block_size): the block's output rows and input columns; 0 = not
  // block-wise. Activations are then quantized per token and group of block_in columns (dynamic).
  int block_out = 0, block_in = 0;

  bool block_wise() const { return block_out > 0; }

  bool quantized() const { return method != QuantMethod::None; }
  // Whether module `name` (without ".weight") is quantized under this config.
  bool is_quantized_module(const std::string& name) const;

  // `value` is the quantization_config object (absent/null = not quantized); `source` names the file in errors.
  static QuantizationConfig from_json(const nlohmann::json* value, const std::string& source);
};

const char* to_string(QuantMethod method);

}  // namespace qed
