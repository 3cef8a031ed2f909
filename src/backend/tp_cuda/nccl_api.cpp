#include "backend/tp_cuda/nccl_api.h"

#include <dlfcn.h>

#include <string>

#include "core/error.h"

namespace qed::tp {
namespace {

template <typename F>
void bind(void* library, const char* name, F& out) {
  out = reinterpret_cast<F>(dlsym(library, name));
  if (!out) fail("tensor parallelism: libnccl.so.2 has no symbol {}", name);
}

NcclApi load() {
  void* library = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* why = dlerror();
    fail(
        "tensor parallelism needs NCCL: cannot load libnccl.so.2 ({}); install it or add its directory to "
        "LD_LIBRARY_PATH",
        why ? why : "unknown error");
  }
  // Never closed: communicators may live until exit.
  NcclApi api;
  bind(library, "ncclCommInitAll", api.comm_init_all);
  bind(library, "ncclCommDestroy", api.comm_destroy);
  bind(library, "ncclAllReduce", api.all_reduce);
  bind(library, "ncclGetErrorString", api.error_string);
  return api;
}

}  // namespace

const NcclApi& nccl_api() {
  static const NcclApi api = load();  // a failed load throws and is retried by the next call
  return api;
}

}  // namespace qed::tp
