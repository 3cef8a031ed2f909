#include "train/linear_grad.h"

#include <algorithm>
#include <functional>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "core/thread_pool.h"

namespace qed::train {
namespace {

constexpr size_t kRowBlock = 16;         // rows sharing one pass over a weight row (16 × 4 KB of x stays in L1/L2)
constexpr size_t kWeightRowBlock = 128;  // rows of x (≤ 128 × in floats, in L2) reused across all output rows

void parallel(ThreadPool* pool, size_t n, const std::function<void(size_t, size_t)>& fn) {
  if (pool && n > 1) {
    pool->parallel_for(n, fn);
  } else {
    fn(0, n);
  }
}

}  // namespace

void linear_forward(const float* x, const float* w, const float* b, float* y, size_t rows, size_t in, size_t out,
                    ThreadPool* pool) {
  parallel(pool, out, [&](size_t begin, size_t end) {
    for (size_t r0 = 0; r0 < rows; r0 += kRowBlock) {
      const size_t r1 = std::min(rows, r0 + kRowBlock);
      for (size_t o = begin; o < end; ++o) {
        const float* wo = w + o * in;
        const float bias = b ? b[o] : 0.0f;
        for (size_t r = r0; r < r1; ++r) y[r * out + o] = cpu::dot(x + r * in, wo, int(in)) + bias;
      }
    }
  });
}

void linear_input_grad(const float* dy, const float* w, float* dx, size_t rows, size_t in, size_t out, bool accumulate,
                       ThreadPool* pool) {
  const size_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  parallel(pool, blocks, [&](size_t begin, size_t end) {
    for (size_t blk = begin; blk < end; ++blk) {
      const size_t r0 = blk * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
      if (!accumulate) std::fill(dx + r0 * in, dx + r1 * in, 0.0f);
      for (size_t o = 0; o < out; ++o) {
        const float* wo = w + o * in;
        for (size_t r = r0; r < r1; ++r) {
          const float g = dy[r * out + o];
          if (g == 0.0f) continue;
          float* d = dx + r * in;
          for (size_t i = 0; i < in; ++i) d[i] += g * wo[i];
        }
      }
    }
  });
}

void linear_weight_grad(const float* dy, const float* x, float* dw, float* db, size_t rows, size_t in, size_t out,
                        ThreadPool* pool) {
  parallel(pool, out, [&](size_t begin, size_t end) {
    std::vector<float> column(kWeightRowBlock);
    for (size_t r0 = 0; r0 < rows; r0 += kWeightRowBlock) {
      const size_t r1 = std::min(rows, r0 + kWeightRowBlock);
      for (size_t o = begin; o < end; ++o) {
        float* d = dw + o * in;
        for (size_t r = r0; r < r1; ++r) column[r - r0] = dy[r * out + o];
        for (size_t r = r0; r < r1; ++r) {
          const float g = column[r - r0];
          if (g == 0.0f) continue;
          const float* xr = x + r * in;
          for (size_t i = 0; i < in; ++i) d[i] += g * xr[i];
        }
        if (db) {
          float sum = db[o];
          for (size_t r = r0; r < r1; ++r) sum += column[r - r0];
          db[o] = sum;
        }
      }
    }
  });
}

}  // namespace qed::train
