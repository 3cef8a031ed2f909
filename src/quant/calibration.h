#pragma once
// Calibration for static FP8 scales: run the bf16 model on the CPU backend over math text and record the amax of
// every linear layer's input and of the K/V values written to the KV cache (K after RoPE: the cached values that
// vLLM's k_scale applies to).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"

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
CalibrationStats calibrate(CpuBackend& backend, const std::vector<std::vector<int32_t>>& samples,
                           const std::function<void(int, int, int64_t)>& progress = {});

}  // namespace qed::quant
