#pragma once
// Small helpers shared by the CPU backend tests: load a fixture model, run one sequence, compare logits.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "hf_fixture.h"

namespace qed::testing {

inline std::unique_ptr<CpuBackend> load_fixture_backend(const std::string& name, int num_blocks = 64,
                                                        int block_size = 16) {
  CpuBackendOptions options;
  options.num_threads = 2;
  options.block_size = block_size;
  options.num_blocks = num_blocks;
  return CpuBackend::load(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name, options);
}

inline std::vector<int32_t> iota_blocks(int first, int count) {
  std::vector<int32_t> blocks(static_cast<size_t>(count));
  std::iota(blocks.begin(), blocks.end(), first);
  return blocks;
}

inline std::vector<int32_t> all_indices(size_t n) {
  std::vector<int32_t> indices(n);
  std::iota(indices.begin(), indices.end(), 0);
  return indices;
}

// One sequence from an empty cache in one chunk, logits at every position; blocks first_block, first_block + 1, ...
inline std::vector<float> prefill_logits(Backend& backend, const std::vector<int32_t>& ids, int first_block = 0) {
  const int block_size = backend.kv_layout().block_size;
  SequenceChunk chunk;
  chunk.tokens = ids;
  chunk.block_table = iota_blocks(first_block, int((ids.size() + size_t(block_size) - 1) / size_t(block_size)));
  chunk.logits_indices = all_indices(ids.size());
  ForwardBatch batch;
  batch.sequences.push_back(chunk);
  ForwardResult result;
  backend.forward(batch, result);
  return result.logits;
}

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float diff = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) diff = std::max(diff, std::fabs(a[i] - b[i]));
  return diff;
}

inline float max_abs(const std::vector<float>& a) {
  float value = 0.0f;
  for (float x : a) value = std::max(value, std::fabs(x));
  return value;
}

}  // namespace qed::testing
