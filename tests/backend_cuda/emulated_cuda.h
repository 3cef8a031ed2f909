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

// The barriers of the CTA being run (all its threads; each warp's 32), each lane's slot for the float shuffles and
// its mma.sync fragments.
struct CtaSync {
  std::barrier<>* all = nullptr;
  std::barrier<>* warp[kMaxWarps] = {};
  float value[kMaxWarps][32] = {};
  uint32_t mma_a[kMaxWarps][32][4] = {};
  uint32_t mma_b[kMaxWarps][32][2] = {};
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

// mma.sync.m16n8k16 with fp32 accumulation, from the PTX ISA's fragment layouts (g = lane / 4, t = lane % 4):
// A (16×16): a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); B (16×8): b0 (2t.., g), b1 (2t+8.., g);
// C (16×8): (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1). `to_float(reg, h)` is the value of half h of a register
// (bf16 or f16, the instruction's type). Every lane of the warp calls it, as on the device.
template <class ToFloat>
void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, const ToFloat& to_float) {
  const int w = warp_of_thread(), l = lane_of_thread();
  for (int i = 0; i < 4; ++i) cta_sync->mma_a[w][l][i] = a[i];
  cta_sync->mma_b[w][l][0] = b0;
  cta_sync->mma_b[w][l][1] = b1;
  warp_barrier();
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const uint32_t(&fa)[4] = cta_sync->mma_a[w][lane];
    const uint32_t(&fb)[2] = cta_sync->mma_b[w][lane];
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = to_float(fa[0], h);
      A[g + 8][2 * t + h] = to_float(fa[1], h);
      A[g][2 * t + 8 + h] = to_float(fa[2], h);
      A[g + 8][2 * t + 8 + h] = to_float(fa[3], h);
      B[2 * t + h][g] = to_float(fb[0], h);
      B[2 * t + 8 + h][g] = to_float(fb[1], h);
    }
  }
  warp_barrier();
  const int g = l / 4, t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e / 2) * 8, col = 2 * t + e % 2;
    for (int k = 0; k < 16; ++k) c[e] += A[row][k] * B[k][col];
  }
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
