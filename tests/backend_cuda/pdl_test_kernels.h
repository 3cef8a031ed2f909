#pragma once
// A deliberately slow PDL kernel for the tests of programmatic dependent launch: it lets the next kernel of the
// stream launch at once, then takes its time before writing, so a next kernel that read its output before
// pdl_wait() would read what was there before.
#include <cuda_runtime.h>

#include <cstddef>

namespace qed::testing {

// Launched with PDL (when enabled): pdl_wait(), pdl_trigger(), spin for about `spin_cycles` SM clocks, then copy
// `bytes` (a multiple of 4) from `in` to `out`.
void slow_copy(const void* in, void* out, size_t bytes, long long spin_cycles, cudaStream_t stream);

}  // namespace qed::testing
