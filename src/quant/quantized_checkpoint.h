#pragma once
// Writes a quantized copy of a bf16 HF checkpoint in the layout vLLM loads (docs/quantize.md lists the fields and
// the vLLM code they follow): the linear layers of the decoder become F8_E4M3 (or I8) `weight` + float32
// `weight_scale` (+ `input_scale`), the attention gets `self_attn.k_scale` / `v_scale` for an FP8 KV cache,
// embeddings, norms, biases and lm_head are copied unchanged, config.json gains `quantization_config`, and the
// tokenizer files are copied.
#include <cstddef>
#include <functional>
#include <string>

#include "model/quant_config.h"
#include "quant/calibration.h"

namespace qed::quant {

struct WriteProgress {
  int tensors_done = 0, tensors_total = 0;  // source tensors
  size_t bytes_done = 0, bytes_total = 0;   // source bytes
  double seconds = 0;                       // since the writer started
};

struct QuantizeOptions {
  QuantMethod method = QuantMethod::Fp8;
  bool per_channel = false;   // FP8 weight scales per output channel (int8_wo is always per channel)
  bool kv_cache_fp8 = false;  // write k_scale / v_scale
  int threads = 0;            // tensors quantized at once; 0 = hardware threads
  // Output files of at most about this many bytes (HF's default 5 GB); one file when everything fits.
  size_t max_shard_bytes = size_t(5) * 1000 * 1000 * 1000;
  // Called after each source tensor, from the worker that finished it (one at a time).
  std::function<void(const WriteProgress&)> progress;
};

// `stats` (from calibrate) is required for FP8 (static input scales) and for kv_cache_fp8. Throws qed::Error on
// an already-quantized model, non-finite weights, or out_dir == model_dir. Tensors are streamed from the source's
// mmap into the output files by `threads` workers (output_shards.h): memory stays a few MB per worker.
void write_quantized_checkpoint(const std::string& model_dir, const std::string& out_dir,
                                const QuantizeOptions& options, const CalibrationStats* stats);

// Throws unless model_dir's config.json describes an unquantized (bf16/f16/f32) model: quantizing, or calibrating
// on, an already-quantized one would compound its rounding.
void require_unquantized_source(const std::string& model_dir);

// The quantization_config written for `options` (exposed for tests and docs).
std::string quantization_config_json(const QuantizeOptions& options);

}  // namespace qed::quant
