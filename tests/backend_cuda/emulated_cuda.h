#pragma once
// What the kernel emulation tests (*_emulation_test.cpp) share of the CUDA environment they compile a kernel body
// against: threadIdx/blockIdx/gridDim, the qualifiers, and a CTA run as std::threads whose __syncthreads and warp
// collectives meet at barriers. One definition for all of them: the intrinsics are inline functions of the global
// namespace, which one test binary may define only once. Include before the kernel's .cuh; each test adds its
// kernel's memory accessors (range-checked) and collectives, and undefines threadIdx, blockIdx, gridDim and
// __shared__ after the .cuh.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace qed::testing::emulated {

struct Index {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local Index thread_index, block_index;
inline Index grid_dim;

inline constexpr int kMaxWarps = 8;

// The barriers of the CTA being run (all its threads; each warp's 32) and each lane's slot for the float shuffles.
struct CtaSync {
  std::barrier<>* all = nullptr;
  std::barrier<>* warp[kMaxWarps] = {};
  float value[kMaxWarps][32] = {};
};
inline CtaSync* cta_sync = nullptr;

inline int warp_of_thread() {
  return int(thread_index.x) / 32;
}
inline int lane_of_thread() {
  return int(thread_index.x) % 32;
}

inline void warp_barrier() {
  cta_sync->warp[warp_of_thread()]->arrive_and_wait();
}

// A buffer the test gave the kernel: its global accesses must stay inside.
struct Range {
  const void* begin = nullptr;
  size_t bytes = 0;
  bool contains(const void* p, size_t n) const {
    const auto* b = static_cast<const unsigned char*>(begin);
    const auto* q = static_cast<const unsigned char*>(p);
    return b && q >= b && q + n <= b + bytes;
  }
};

[[noreturn]] inline void fail_access(const char* what, const void* at) {
  std::fprintf(stderr, "emulated kernel: %s at %p\n", what, at);
  std::abort();
}

// A 16-byte global load from `range`: a misaligned one, or one outside it, aborts the test naming `what`.
inline uint4 checked_load_16(const void* p, const Range& range, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0 || !range.contains(p, 16)) fail_access(what, p);
  uint4 v;
  std::memcpy(&v, p, 16);
  return v;
}

// Runs CTA `block` as `threads` std::threads (at most kMaxWarps warps), each calling kernel() with its threadIdx.
template <class Kernel>
void run_cta(Index block, int threads, const Kernel& kernel) {
  std::barrier<> all(threads);
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  auto sync = std::make_unique<CtaSync>();
  sync->all = &all;
  for (int w = 0; w < threads / 32; ++w) {
    warps.push_back(std::make_unique<std::barrier<>>(32));
    sync->warp[w] = warps.back().get();
  }
  cta_sync = sync.get();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      thread_index = {unsigned(t), 0, 0};
      block_index = block;
      kernel();
    });
  }
  for (std::thread& thread : pool) thread.join();
  cta_sync = nullptr;
}

}  // namespace qed::testing::emulated

#define threadIdx ::qed::testing::emulated::thread_index
#define blockIdx ::qed::testing::emulated::block_index
#define gridDim ::qed::testing::emulated::grid_dim
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__ static  // one CTA at a time: a function's statics are its shared memory

inline void __syncthreads() {
  qed::testing::emulated::cta_sync->all->arrive_and_wait();
}

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  using namespace qed::testing::emulated;
  const int w = warp_of_thread(), l = lane_of_thread();
  cta_sync->value[w][l] = v;
  warp_barrier();
  const float r = cta_sync->value[w][l ^ lane_mask];
  warp_barrier();
  return r;
}

inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t bytes = uint64_t(x) | (uint64_t(y) << 32);
  unsigned r = 0;
  for (int n = 0; n < 4; ++n) r |= unsigned((bytes >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
  return r;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fadd_rn(float a, float b) {
  return a + b;
}
