#pragma once
// Writes a quantized copy of a bf16 HF checkpoint in the layout vLLM loads (docs/quantize.md lists the fields and
// the vLLM code they follow): the linear layers of the decoder become F8_E4M3 (or I8) `weight` + float32
// `weight_scale` (+ `input_scale`), the attention gets `self_attn.k_scale` / `v_scale` for an FP8 KV cache,
// embeddings, norms, biases and lm_head are copied unchanged, config.json gains `quantization_config`, and the
// tokenizer files are copied.
#include <string>

#include "model/quant_config.h"
#include "quant/calibration.h"

namespace qed::quant {

struct QuantizeOptions {
  QuantMethod method = QuantMethod::Fp8;
  bool per_channel = false;   // FP8 weight scales per output channel (int8_wo is always per channel)
  bool kv_cache_fp8 = false;  // write k_scale / v_scale
};

// `stats` (from calibrate) is required for FP8 (static input scales) and for kv_cache_fp8. Throws qed::Error on
// an already-quantized model, non-finite weights, or out_dir == model_dir.
void write_quantized_checkpoint(const std::string& model_dir, const std::string& out_dir,
                                const QuantizeOptions& options, const CalibrationStats* stats);

// The quantization_config written for `options` (exposed for tests and docs).
std::string quantization_config_json(const QuantizeOptions& options);

}  // namespace qed::quant
