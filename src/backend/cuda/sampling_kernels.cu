#include <cfloat>
#include <climits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/sampling_kernels.h"

namespace qed::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// --- the CPU sampler's random stream, bit for bit (backend/sampling.cpp) ---
__device__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__device__ double uniform(uint64_t seed, uint64_t step) {
  const uint64_t bits = splitmix64(splitmix64(seed) ^ step);
  return double(bits >> 11) * 0x1.0p-53;
}

// Float → uint32 whose unsigned order is the float order (-inf lowest). -0 is folded onto +0 first: the CPU
// compares floats, where they are equal.
__device__ __forceinline__ uint32_t order_key(float x) {
  const uint32_t bits = __float_as_uint(x + 0.0f);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Block-wide reductions (all threads call; all get the result).
__device__ double block_sum(double v, double* scratch) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];  // fixed order: deterministic
  return total;
}

__device__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

// (value, index) ordered by value descending, then index ascending: "a before b".
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// The first element in that order among those strictly after (after_value, after_index); index -1 if none.
__device__ int block_argmax_after(const float* x, int n, float after_value, int after_index, bool bounded,
                                  float* value_scratch, int* index_scratch) {
  float best_v = -INFINITY;
  int best_i = -1;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const float v = x[i];
    if (bounded && !before(after_value, after_index, v, i)) continue;
    if (best_i < 0 || before(v, i, best_v, best_i)) {
      best_v = v;
      best_i = i;
    }
  }
  for (int o = 16; o > 0; o /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, best_v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (oi >= 0 && (best_i < 0 || before(ov, oi, best_v, best_i))) {
      best_v = ov;
      best_i = oi;
    }
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) {
    value_scratch[threadIdx.x / 32] = best_v;
    index_scratch[threadIdx.x / 32] = best_i;
  }
  __syncthreads();
  best_v = -INFINITY;
  best_i = -1;
  for (int w = 0; w < kWarps; ++w) {
    if (index_scratch[w] >= 0 && (best_i < 0 || before(value_scratch[w], index_scratch[w], best_v, best_i))) {
      best_v = value_scratch[w];
      best_i = index_scratch[w];
    }
  }
  return best_i;
}

// HF top-k: keep every entry >= the k-th largest value (ties with it stay). Radix select on order keys, MSB first.
__device__ void apply_top_k(float* x, int n, int k, unsigned* hist, uint32_t* shared_prefix) {
  uint32_t prefix = 0, prefix_mask = 0;
  int count_above = 0;  // entries whose key is above the current prefix range
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += kThreads) hist[d] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kThreads) {
      const uint32_t key = order_key(x[i]);
      if ((key & prefix_mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = count_above;
      int digit = 255;
      for (; digit > 0; --digit) {
        if (above + int(hist[digit]) >= k) break;
        above += int(hist[digit]);
      }
      shared_prefix[0] = prefix | (uint32_t(digit) << shift);
      shared_prefix[1] = uint32_t(above);
    }
    __syncthreads();
    prefix = shared_prefix[0];
    count_above = int(shared_prefix[1]);
    prefix_mask |= 255u << shift;
    __syncthreads();
  }
  for (int i = threadIdx.x; i < n; i += kThreads) {
    if (order_key(x[i]) < prefix) x[i] = -INFINITY;
  }
  __syncthreads();
}

// HF top-p (TopPLogitsWarper): in ascending (value, index) order, drop the prefix whose cumulative probability
// stays <= 1 - top_p; the most likely entry always stays. Radix select over 64-bit (order key, index) keys by mass:
// the boundary is the first key whose inclusive cumulative mass exceeds the threshold; everything below it goes.
__device__ void apply_top_p(float* x, int n, float top_p, float max_value, double* mass_hist, unsigned* count_hist,
                            double* reduce_scratch, unsigned long long* shared_state) {
  double total = 0.0;
  for (int i = threadIdx.x; i < n; i += kThreads) total += exp(double(x[i]) - double(max_value));
  total = block_sum(total, reduce_scratch);
  const double threshold = (1.0 - double(top_p)) * total;  // in unnormalised mass

  unsigned long long prefix = 0, prefix_mask = 0;
  double mass_below = 0.0;
  bool found_any = true;  // false once no digit crosses the threshold: then the descent tracks the largest key
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += kThreads) {
      mass_hist[d] = 0.0;
      count_hist[d] = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kThreads) {
      const unsigned long long key = (static_cast<unsigned long long>(order_key(x[i])) << 32) | unsigned(i);
      if ((key & prefix_mask) != prefix) continue;
      const unsigned digit = unsigned(key >> shift) & 255u;
      atomicAdd(&mass_hist[digit], exp(double(x[i]) - double(max_value)));
      atomicAdd(&count_hist[digit], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int digit = -1;
      double below = mass_below;
      if (found_any) {
        for (int d = 0; d < 256; ++d) {
          if (count_hist[d] == 0) continue;
          if (below + mass_hist[d] > threshold) {
            digit = d;
            break;
          }
          below += mass_hist[d];
        }
      }
      if (digit < 0) {  // nothing crosses (rounding with top_p tiny): keep only the last entry in the order
        found_any = false;
        for (int d = 255; d >= 0; --d) {
          if (count_hist[d] != 0) {
            digit = d;
            break;
          }
        }
      }
      shared_state[0] = prefix | (static_cast<unsigned long long>(digit) << shift);
      shared_state[1] = found_any ? 1ull : 0ull;
      reduce_scratch[0] = below;
    }
    __syncthreads();
    prefix = shared_state[0];
    found_any = shared_state[1] != 0;
    mass_below = reduce_scratch[0];
    prefix_mask |= 255ull << shift;
    __syncthreads();
  }
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const unsigned long long key = (static_cast<unsigned long long>(order_key(x[i])) << 32) | unsigned(i);
    if (key < prefix) x[i] = -INFINITY;
  }
  __syncthreads();
}

// HF min-p: drop entries whose probability is below min_p × the top probability (computed as the CPU does).
__device__ void apply_min_p(float* x, int n, float min_p, float max_value, double* reduce_scratch) {
  double sum = 0.0;
  for (int i = threadIdx.x; i < n; i += kThreads) sum += exp(double(x[i]) - double(max_value));
  sum = block_sum(sum, reduce_scratch);
  const double top = 1.0 / sum;  // the max entry's exp(0) / sum
  for (int i = threadIdx.x; i < n; i += kThreads) {
    if (exp(double(x[i]) - double(max_value)) / sum < double(min_p) * top) x[i] = -INFINITY;
  }
  __syncthreads();
}

// Inverse CDF in token-id order, as the CPU: the first i whose cumulative probability exceeds u; the last kept
// entry if rounding leaves u above the total. Each thread owns a contiguous chunk, chunk sums are scanned.
__device__ int draw(const float* x, int n, float max_value, double u, double* chunk_scan, double* reduce_scratch,
                    int* shared_ints) {
  double sum = 0.0;
  for (int i = threadIdx.x; i < n; i += kThreads) sum += exp(double(x[i]) - double(max_value));
  sum = block_sum(sum, reduce_scratch);
  const int chunk = (n + kThreads - 1) / kThreads;
  const int first = threadIdx.x * chunk;
  const int last = min(n, first + chunk);
  double mine = 0.0;
  for (int i = first; i < last; ++i) mine += exp(double(x[i]) - double(max_value)) / sum;
  chunk_scan[threadIdx.x] = mine;
  if (threadIdx.x == 0) {
    shared_ints[0] = INT_MAX;  // first index crossing u
    shared_ints[1] = -1;       // last kept index
  }
  __syncthreads();
  if (threadIdx.x == 0) {  // exclusive scan, serial: 1024 adds, fixed order
    double running = 0.0;
    for (int t = 0; t < kThreads; ++t) {
      const double v = chunk_scan[t];
      chunk_scan[t] = running;
      running += v;
    }
  }
  __syncthreads();
  double cumulative = chunk_scan[threadIdx.x];
  int crossing = INT_MAX, last_kept = -1;
  for (int i = first; i < last; ++i) {
    const double p = exp(double(x[i]) - double(max_value)) / sum;
    if (p <= 0.0) continue;
    last_kept = i;
    cumulative += p;
    if (u < cumulative) {
      crossing = i;
      break;
    }
  }
  if (crossing != INT_MAX) atomicMin(&shared_ints[0], crossing);
  if (last_kept >= 0) atomicMax(&shared_ints[1], last_kept);
  __syncthreads();
  const int token = shared_ints[0] != INT_MAX ? shared_ints[0] : shared_ints[1];
  __syncthreads();
  return token;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* logits, int vocab, const SamplingRowParams* all_params, float* work,
                  SampledRow* all_out) {
  __shared__ double reduce_scratch[kWarps];
  __shared__ float value_scratch[kWarps];
  __shared__ int index_scratch[kWarps];
  __shared__ double mass_hist[256];
  __shared__ unsigned count_hist[256];
  __shared__ double chunk_scan[kThreads];
  __shared__ unsigned long long shared_state[2];
  __shared__ uint32_t shared_prefix[2];
  __shared__ int shared_ints[2];

  pdl_wait();
  pdl_trigger();
  const size_t sample = blockIdx.x;
  const SamplingRowParams params = all_params[sample];
  const float* raw = logits + size_t(params.row) * vocab;
  float* x = work + sample * vocab;
  SampledRow& out = all_out[sample];

  int token;
  if (params.temperature <= 0.0f) {
    token = block_argmax_after(raw, vocab, 0.0f, 0, false, value_scratch, index_scratch);
  } else {
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      x[i] = params.temperature != 1.0f ? raw[i] / params.temperature : raw[i];
    }
    __syncthreads();
    // The filters never drop the maximum, so one max serves them all.
    float local_max = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += kThreads) local_max = fmaxf(local_max, x[i]);
    const float max_value = block_max(local_max, value_scratch);
    if (params.top_k > 0 && params.top_k < vocab) apply_top_k(x, vocab, params.top_k, count_hist, shared_prefix);
    if (params.top_p < 1.0f)
      apply_top_p(x, vocab, params.top_p, max_value, mass_hist, count_hist, reduce_scratch, shared_state);
    if (params.min_p > 0.0f) apply_min_p(x, vocab, params.min_p, max_value, reduce_scratch);
    token = draw(x, vocab, max_value, uniform(params.seed, params.step), chunk_scan, reduce_scratch, shared_ints);
  }

  if (params.logprobs >= 0) {
    // Log-softmax of the raw logits, as the CPU (and vLLM) report.
    float local_max = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += kThreads) local_max = fmaxf(local_max, raw[i]);
    const float max_raw = block_max(local_max, value_scratch);
    double sum = 0.0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) sum += exp(double(raw[i]) - double(max_raw));
    sum = block_sum(sum, reduce_scratch);
    const double log_sum = double(max_raw) + log(sum);
    const int k = min(min(params.logprobs, kMaxTopLogprobs), vocab);
    float after_value = 0.0f;
    int after_index = 0;
    for (int j = 0; j < k; ++j) {
      const int best = block_argmax_after(raw, vocab, after_value, after_index, j > 0, value_scratch, index_scratch);
      after_value = raw[best];
      after_index = best;
      if (threadIdx.x == 0) {
        out.top_tokens[j] = best;
        out.top_logprobs[j] = float(double(raw[best]) - log_sum);
      }
    }
    if (threadIdx.x == 0) out.logprob = float(double(raw[token]) - log_sum);
  }
  if (threadIdx.x == 0) out.token = token;
}

}  // namespace

void sample_rows(const float* logits, int samples, int vocab, const SamplingRowParams* params, float* work,
                 SampledRow* out, cudaStream_t stream) {
  if (samples <= 0) return;
  QED_KERNEL_REQUIRE(vocab > 0, "sample_rows: vocab must be positive");
  launch_kernel(sample_kernel, dim3(unsigned(samples)), dim3(kThreads), 0, stream, true, logits, vocab, params, work,
                out);
}

}  // namespace qed::cuda
