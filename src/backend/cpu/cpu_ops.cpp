#include "backend/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "core/thread_pool.h"

namespace qed::cpu {
namespace {

float rms_scale(const float* x, int dim, float eps) {
  // HF: hidden.pow(2).mean(-1) in fp32, then torch.rsqrt(variance + eps).
  float sum = dot(x, x, dim);
  float variance = sum / float(dim);
  return 1.0f / std::sqrt(variance + eps);
}

void parallel(ThreadPool* pool, size_t n, const std::function<void(size_t, size_t)>& fn) {
  if (pool) {
    pool->parallel_for(n, fn);
  } else {
    fn(0, n);
  }
}

}  // namespace

// Eight independent partial sums: lets the compiler vectorise without -ffast-math, and keeps the rounding error of
// long dot products (K = 13824 in the 14B MLP) closer to a BLAS blocked sum than one serial accumulator would.
float dot(const float* a, const float* b, int n) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int lane = 0; lane < 8; ++lane) partial[lane] += a[k + lane] * b[k + lane];
  }
  for (; k < n; ++k) partial[k % 8] += a[k] * b[k];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

void rmsnorm(const float* x, const float* weight, float* out, int rows, int dim, float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* row = x + size_t(r) * dim;
    float* dst = out + size_t(r) * dim;
    float scale = rms_scale(row, dim, eps);
    // HF multiplies by the scale first, then by the weight: weight * (hidden * rsqrt(...)).
    for (int i = 0; i < dim; ++i) dst[i] = weight[i] * (row[i] * scale);
  }
}

void add_rmsnorm(float* residual, const float* delta, const float* weight, float* out, int rows, int dim, float eps) {
  for (size_t i = 0; i < size_t(rows) * dim; ++i) residual[i] += delta[i];
  rmsnorm(residual, weight, out, rows, dim, eps);
}

void matmul(const float* x, const float* w, const float* bias, float* out, int rows, int in, int out_dim,
            ThreadPool* pool) {
  // Rows in blocks of 16 under each weight row: a multi-token forward (prefill, a draft tree's verification) reads
  // the weights once per block instead of once per token. Each output is the same dot as row by row.
  constexpr int kRowBlock = 16;
  parallel(pool, size_t(out_dim), [&](size_t begin, size_t end) {
    for (int r0 = 0; r0 < rows; r0 += kRowBlock) {
      const int r1 = std::min(rows, r0 + kRowBlock);
      for (size_t j = begin; j < end; ++j) {
        const float* wj = w + j * size_t(in);
        for (int r = r0; r < r1; ++r) {
          const float value = dot(x + size_t(r) * in, wj, in);
          out[size_t(r) * out_dim + j] = bias ? value + bias[j] : value;
        }
      }
    }
  });
}

void silu_and_mul(const float* gate_up, float* out, int rows, int inter) {
  for (int r = 0; r < rows; ++r) {
    const float* gate = gate_up + size_t(r) * 2 * inter;
    const float* up = gate + inter;
    float* dst = out + size_t(r) * inter;
    for (int i = 0; i < inter; ++i) {
      float g = gate[i];
      dst[i] = (g / (1.0f + std::exp(-g))) * up[i];
    }
  }
}

void embedding(const float* table, const int32_t* ids, float* out, int rows, int dim) {
  for (int r = 0; r < rows; ++r) {
    std::copy_n(table + size_t(ids[r]) * dim, dim, out + size_t(r) * dim);
  }
}

void softmax(float* x, int n) {
  float max = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max == -std::numeric_limits<float>::infinity()) {
    for (int i = 0; i < n; ++i) x[i] = 0.0f;  // nothing visible: no probability anywhere rather than NaN
    return;
  }
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  for (int i = 0; i < n; ++i) x[i] /= sum;
}

void rope_inv_freq(int head_dim, float theta, const RopeScaling& scaling, float* inv_freq) {
  const int half = head_dim / 2;
  // transformers: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), every step in float32.
  for (int i = 0; i < half; ++i) {
    float exponent = float(2 * i) / float(head_dim);
    inv_freq[i] = 1.0f / std::pow(theta, exponent);
  }
  if (scaling.type != "llama3") return;
  // transformers' _compute_llama3_parameters, same float32 tensor ops with the Python scalars rounded to float32.
  const float factor = scaling.factor;
  const float low = scaling.low_freq_factor;
  const float high = scaling.high_freq_factor;
  const float old_context = float(scaling.original_max_position_embeddings);
  const float low_freq_wavelen = old_context / low;
  const float high_freq_wavelen = old_context / high;
  const float two_pi = float(2.0 * std::numbers::pi);
  for (int i = 0; i < half; ++i) {
    float freq = inv_freq[i];
    float wavelen = two_pi / freq;
    float scaled = wavelen > low_freq_wavelen ? freq / factor : freq;
    bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (medium) {
      float smooth = (old_context / wavelen - low) / (high - low);
      scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
    inv_freq[i] = scaled;
  }
}

void rope(float* x, const int32_t* positions, const float* inv_freq, int rows, int num_heads, int head_dim) {
  const int half = head_dim / 2;
  std::vector<float> cos(half), sin(half);
  for (int r = 0; r < rows; ++r) {
    // HF: freqs = inv_freq (fp32) @ position (fp32), then emb.cos() / emb.sin() in fp32.
    for (int i = 0; i < half; ++i) {
      float angle = inv_freq[i] * float(positions[r]);
      cos[i] = std::cos(angle);
      sin[i] = std::sin(angle);
    }
    for (int h = 0; h < num_heads; ++h) {
      float* head = x + (size_t(r) * num_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        float a = head[i];
        float b = head[i + half];
        // q * cos + rotate_half(q) * sin, rotate_half(q) = [-q2, q1].
        head[i] = a * cos[i] + (-b) * sin[i];
        head[i + half] = b * cos[i] + a * sin[i];
      }
    }
  }
}

namespace {
size_t slot_offset(const PagedKv& cache, const int32_t* block_table, int slot, int kv_head) {
  size_t block = size_t(block_table[slot / cache.block_size]);
  size_t row = block * cache.block_size + size_t(slot % cache.block_size);
  return (row * cache.num_kv_heads + kv_head) * cache.head_dim;
}
}  // namespace

void write_kv(const PagedKv& cache, const int32_t* block_table, int first_slot, const float* k, const float* v,
              int rows) {
  const size_t row_size = size_t(cache.num_kv_heads) * cache.head_dim;
  for (int r = 0; r < rows; ++r) {
    size_t offset = slot_offset(cache, block_table, first_slot + r, 0);
    std::copy_n(k + r * row_size, row_size, cache.k + offset);
    std::copy_n(v + r * row_size, row_size, cache.v + offset);
  }
}

void attention(const float* q, const PagedKv& cache, const int32_t* block_table, int num_cached, int n, int num_heads,
               const uint8_t* mask, float scale, float* out, ThreadPool* pool) {
  const int head_dim = cache.head_dim;
  const int group = num_heads / cache.num_kv_heads;
  const int total = num_cached + n;
  parallel(pool, size_t(n) * num_heads, [&](size_t begin, size_t end) {
    std::vector<float> scores(static_cast<size_t>(total));
    for (size_t task = begin; task < end; ++task) {
      const int i = int(task / num_heads);
      const int h = int(task % num_heads);
      const int kv_head = h / group;
      const float* query = q + (size_t(i) * num_heads + h) * head_dim;
      for (int slot = 0; slot < total; ++slot) {
        const int j = slot - num_cached;  // index among the new tokens, < 0 for the cached prefix
        bool visible = j < 0 || (mask ? mask[size_t(i) * n + j] != 0 : j <= i);
        scores[slot] = visible ? dot(query, cache.k + slot_offset(cache, block_table, slot, kv_head), head_dim) * scale
                               : -std::numeric_limits<float>::infinity();
      }
      softmax(scores.data(), total);
      float* dst = out + (size_t(i) * num_heads + h) * head_dim;
      std::fill_n(dst, head_dim, 0.0f);
      for (int slot = 0; slot < total; ++slot) {
        if (scores[slot] == 0.0f) continue;
        const float* value = cache.v + slot_offset(cache, block_table, slot, kv_head);
        for (int d = 0; d < head_dim; ++d) dst[d] += scores[slot] * value[d];
      }
    }
  });
}

}  // namespace qed::cpu
