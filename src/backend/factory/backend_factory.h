#pragma once
// Picks the compute backend for a model directory by name, so the CLI, the engine and the server stay
// backend-agnostic: `--backend cpu|cuda` maps onto BackendSelection 1:1.
#include <cstddef>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace qed {

struct BackendSelection {
  std::string kind = "cpu";  // "cpu" | "cuda"
  int block_size = 16;       // tokens per KV block
  int num_blocks = 0;        // 0 = the backend's own sizing (cpu: kv_cache_bytes; cuda: gpu_memory_fraction)
  // cpu
  int threads = 0;
  size_t kv_cache_bytes = size_t(256) << 20;
  // cuda
  int device = 0;
  float gpu_memory_fraction = 0.90f;
  int max_batched_tokens = 8192;  // the scheduler's per-step token budget (sizes the activation buffers)
};

// Throws qed::Error with one line when the kind is unknown, when CUDA was asked for but this binary was built
// without it, or when no device is visible.
std::unique_ptr<Backend> make_backend(const std::string& model_dir, const BackendSelection& selection);

// Whether this binary contains the CUDA backend.
bool cuda_backend_compiled();

}  // namespace qed
