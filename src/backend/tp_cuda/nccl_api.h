#pragma once
// NCCL, loaded at run time (dlopen of libnccl.so.2) rather than linked: qed and its GPU tests then start on machines
// without NCCL (libnccl is ~200 MB and not part of every CUDA image), and only --tensor-parallel-size > 1 needs it.
// The function types come from nccl.h, so a changed signature is a compile error.
#include <nccl.h>

namespace qed::tp {

struct NcclApi {
  decltype(&ncclCommInitAll) comm_init_all = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
};

// Loads libnccl.so.2 on first use (thread-safe); throws qed::Error with one line if it or a symbol is missing.
const NcclApi& nccl_api();

}  // namespace qed::tp
