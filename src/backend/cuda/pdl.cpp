#include "backend/cuda/pdl.h"

#include <atomic>

namespace qed::cuda {
namespace {
std::atomic<bool> enabled{false};
}

bool pdl_enabled() {
  return enabled.load(std::memory_order_relaxed);
}
void set_pdl_enabled(bool on) {
  enabled.store(on, std::memory_order_relaxed);
}

}  // namespace qed::cuda
