#pragma once
// The CUDA backend's A/B switches (QED_PDL, QED_FUSED_MERGE, QED_CUDA_VERIFY_GRAPHS, QED_DECODE_GEMM,
// QED_CUDA_STEP_TIMING; docs/cuda.md "A/B switches"): environment variables that turn a fast path off (or a new
// one on) so one binary measures old against new. One parser for all of them, so every switch reads "0" the same
// way. Callers read a switch once (a backend constructor, or a function-local static), not per launch.
// No fmt/qed::Error here: .cu files include it.
#include <string>

namespace qed::cuda {

// Switch `name`: unset or empty = `fallback`; "0" = off; any other value = on.
bool env_flag(const char* name, bool fallback);

// The value of `name`, "" when unset.
std::string env_string(const char* name);

// Switch `name` as an integer (std::atoi: a non-number reads 0); unset or empty = `fallback`.
int env_int(const char* name, int fallback);

}  // namespace qed::cuda
