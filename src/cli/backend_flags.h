#pragma once
// The flags that choose the compute backend, shared by generate / batch / serve (and bench offline).
#include <CLI/CLI.hpp>
#include <string>

#include "backend/factory/backend_factory.h"

namespace qed::cli {

struct BackendFlags {
  std::string backend = "cpu";
  float gpu_memory_fraction = BackendSelection{}.gpu_memory_fraction;
  int gpu_device = 0;
  bool cuda_graphs = true;
  int prefill_attention_min_rows = BackendSelection{}.prefill_attention_min_rows;
  int tensor_parallel_size = 1;
  std::string kv_cache_dtype = BackendSelection{}.kv_cache_dtype;
  bool pipelined_decode_attention = false;
};

void add_backend_flags(CLI::App* cmd, BackendFlags& flags);

// The selection for these flags; the caller fills in the CPU fields and the step token budget.
BackendSelection backend_selection(const BackendFlags& flags);

}  // namespace qed::cli
