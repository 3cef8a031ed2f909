#pragma once
// Calibration for static FP8 scales: run the bf16 model (CUDA backend, or the CPU backend for small models) over
// math text and record the amax of every linear layer's input and of the K/V values written to the KV cache (K after
// RoPE: the cached values that vLLM's k_scale applies to). calibration_cuda.h has the CUDA recorder.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "model/model_config.h"

namespace qed::quant {

struct CalibrationData {
  std::string path;  // a .jsonl file, or a directory whose *.jsonl files are read
  int samples = 64;
  int seq_len = 512;  // tokens per sample at most (longer texts are cut)
};

// Token sequences from jsonl rows, deterministic: files sorted by name, taken round-robin (one row of each file in
// turn) until `samples`. A row gives `input_ids` (token ids, used as they are), `text` (tokenized raw), or
// `problem` (+ `solution` / `generated_solution` when present), rendered as a user turn (+ assistant turn) with
// the model's chat template when it has one. Throws naming the file and line on a row that gives none of these.
std::vector<std::vector<int32_t>> load_calibration_samples(const CalibrationData& data, const std::string& model_dir);

struct LayerAmax {
  float qkv_input = 0, o_input = 0, gate_up_input = 0, down_input = 0;
  float k = 0, v = 0;
};

struct CalibrationStats {
  std::vector<LayerAmax> layers;
  int samples = 0;
  int64_t tokens = 0;
};

// Records amax over all samples (one forward per sample: a max does not depend on the order, so the result is
// the same for any batching). `progress(done, total, tokens)` is called after each sample. Throws if an
// activation is NaN or infinite (no finite scale could represent it).
using CalibrationProgress = std::function<void(int done, int total, int64_t tokens)>;
CalibrationStats calibrate(CpuBackend& backend, const std::vector<std::vector<int32_t>>& samples,
                           const CalibrationProgress& progress = {});

// The forwards of a calibration, for any backend whose recorder is attached: one prefill per sample in blocks
// 0.., counting samples and tokens into `stats` (its layers are the recorder's business).
void run_calibration_forwards(Backend& backend, const std::vector<std::vector<int32_t>>& samples,
                              CalibrationStats& stats, const CalibrationProgress& progress);

// Throws naming the layer and site if an amax is not finite (no finite scale could represent the activation).
void check_finite_amax(const CalibrationStats& stats);

// Which backend calibrates: `qed quantize --backend`.
struct CalibrationBackend {
  std::string kind;  // "cpu" | "cuda" | "" = default_calibration_backend()
  int threads = 0;   // cpu: 0 = all
  int device = 0;    // cuda
};
// "cuda" when this binary has the CUDA backend and a device is visible, else "cpu".
std::string default_calibration_backend();
// Loads the model on the chosen backend, with a KV cache just large enough for the longest sample, and calibrates.
CalibrationStats calibrate_model(const std::string& model_dir, const std::vector<std::vector<int32_t>>& samples,
                                 const CalibrationBackend& backend, const CalibrationProgress& progress = {});

}  // namespace qed::quant
