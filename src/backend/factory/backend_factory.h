#pragma once
// Picks the compute backend for a model directory by name, so the CLI, the engine and the server stay
// backend-agnostic: `--backend cpu|cuda` maps onto BackendSelection 1:1.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "model/model_config.h"

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
  int max_batched_tokens = 8192;            // the scheduler's per-step token budget (sizes the activation buffers)
  bool cuda_graphs = true;                  // replay captured CUDA graphs for decode steps (the CLI default)
  std::string random_dtype = "bf16";        // make_random_backend only: bf16 | fp8 | int8_wo
  int prefill_attention_min_rows = 32;      // causal chunks this long take the tensor-core prefill attention (0: never)
  std::string kv_cache_dtype = "auto";      // auto (fp8 when the checkpoint has k/v scales) | bf16 | fp8
  bool pipelined_decode_attention = false;  // cuda: the cp.async-pipelined decode attention CTA (A/B runs)
  // > 1: the model sharded over this many ranks (docs/tp.md): cpu runs the exact simulation, cuda one rank per
  // device (devices `device` .. device + N - 1, NCCL). 1 = the unsharded backends, untouched.
  int tensor_parallel_size = 1;
};

// Throws qed::Error with one line when the kind is unknown, when CUDA was asked for but this binary was built
// without it, or when no device is visible.
std::unique_ptr<Backend> make_backend(const std::string& model_dir, const BackendSelection& selection);

// A model of `config`'s shape with random weights from `seed` (benchmarks and serving without a checkpoint). cuda:
// generated on the device, bf16 or quantized (random_dtype); cpu: fp32, for small shapes only (plumbing tests: the
// whole model in host memory, numbers that mean nothing).
std::unique_ptr<Backend> make_random_backend(const ModelConfig& config, uint64_t seed,
                                             const BackendSelection& selection);

// Whether this binary contains the CUDA backend.
bool cuda_backend_compiled();

// What a benchmark's provenance records about the device the selection runs on.
struct BackendDevice {
  std::string device;  // "NVIDIA H100 80GB HBM3", or "cpu"
  std::string driver;  // CUDA version the driver supports ("" on cpu)
  std::string cuda;    // CUDA runtime version of this binary ("" on cpu)
};
BackendDevice describe_backend_device(const BackendSelection& selection);

}  // namespace qed
