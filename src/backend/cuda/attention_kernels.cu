#include <cuda_bf16.h>

#include <algorithm>
#include <climits>

#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"

namespace qed::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;  // query heads per CTA; larger GQA groups take several CTAs per KV head
// Few keys per partition keep batch-1 decode parallel (1k context: 16 partitions x 8 KV heads = 128 CTAs).
constexpr int kMinPartitionKeys = 64;

struct Params {
  AttentionBatch batch;
  AttentionShape shape;
  const __nv_bfloat16* q;
  int q_stride;
  const __nv_bfloat16* k_cache;
  const __nv_bfloat16* v_cache;
  int partitions;
  int partition_size;
  int subgroups;  // CTAs per KV head along grid.y
  float* partials;
  __nv_bfloat16* out;
};

// Weight of a partial result with running max m when the merged max is `merged`: 0 for an empty partial (m = -inf),
// which also keeps exp(-inf - -inf) = NaN out when every partial is empty.
__device__ __forceinline__ float merge_weight(float m, float merged) {
  return m == -INFINITY ? 0.0f : expf(m - merged);
}

template <int HEAD_DIM>
__global__ void __launch_bounds__(kThreads) attention_kernel(Params p) {
  constexpr int kLanes = HEAD_DIM / 8;         // lanes sharing one key, 8 dims (16 bytes) each
  constexpr int kStreams = kThreads / kLanes;  // keys in flight per CTA
  __shared__ float shared_m[kStreams][kMaxGroup];
  __shared__ float shared_l[kStreams][kMaxGroup];
  __shared__ float shared_acc[kStreams][kMaxGroup][HEAD_DIM];

  const AttentionBatch& b = p.batch;
  const int row = b.row_list ? b.row_list[blockIdx.x] : int(blockIdx.x);
  const int kv_head = blockIdx.y / p.subgroups;
  const int group = p.shape.num_heads / p.shape.num_kv_heads;
  const int first_in_group = (blockIdx.y % p.subgroups) * kMaxGroup;
  const int head0 = kv_head * group + first_in_group;
  const int heads_here = min(kMaxGroup, group - first_in_group);
  const int part = blockIdx.z;

  const int seq = b.row_seq[row];
  const int qi = row - b.seq_q_start[seq];  // index among the sequence's new tokens
  const int n = b.seq_num_new[seq];
  const int cached = b.seq_num_cached[seq];
  const int mask_offset = b.seq_mask_offset[seq];
  const int32_t* table = b.block_tables + b.seq_block_offset[seq];
  const uint8_t* mask = mask_offset >= 0 ? b.masks + mask_offset + size_t(qi) * n : nullptr;
  // Causal: new tokens after qi are past the end; with a mask every new token is a candidate, the mask decides.
  const int kv_len = cached + (mask ? n : qi + 1);
  const int begin = part * p.partition_size;
  const int end = min(kv_len, begin + p.partition_size);
  if (begin >= end && p.partitions > 1) {
    // A partition past this row's context (shorter rows of the batch; graphs split for a context bucket): an empty
    // partial, weight 0 in the merge; its values are zeroed so 0 * garbage cannot make a NaN.
    for (int item = threadIdx.x; item < heads_here * (HEAD_DIM + 2); item += kThreads) {
      const int g = item / (HEAD_DIM + 2), d = item % (HEAD_DIM + 2);
      const size_t launch_row = size_t(blockIdx.x) * p.shape.num_heads + size_t(head0 + g);  // partials: by launch
      p.partials[(launch_row * p.partitions + part) * attention_partial_floats(HEAD_DIM) + d] =
          d == HEAD_DIM ? -INFINITY : 0.0f;
    }
    return;
  }

  const int stream = threadIdx.x / kLanes;
  const int d0 = (threadIdx.x % kLanes) * 8;
  const int block_size = p.shape.block_size;
  const size_t kv_dim = size_t(p.shape.num_kv_heads) * HEAD_DIM;
  const float scale = p.shape.scale;

  float qv[kMaxGroup][8];
  float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][8];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g < heads_here) {
      load_f32x8(p.q + size_t(row) * p.q_stride + size_t(head0 + g) * HEAD_DIM + d0, qv[g]);
    } else {
#pragma unroll
      for (int d = 0; d < 8; ++d) qv[g][d] = 0.0f;
    }
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int d = 0; d < 8; ++d) acc[g][d] = 0.0f;
  }

  // Every lane runs every round (the shuffles below need the whole warp); lanes past the end or on a masked key
  // load nothing and update nothing. A round loads kUnroll keys per stream before using any: with 8 streams
  // (head_dim 128) one key at a time left each CTA waiting on one load after another (batch-1 decode, 1k context:
  // 23 us per layer).
  constexpr int kUnroll = kStreams >= 32 ? 1 : 4;
  for (int base = begin; base < end; base += kStreams * kUnroll) {
    float kf[kUnroll][8], vf[kUnroll][8];
    bool active[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = base + u * kStreams + stream;
      active[u] = t < end && (t < cached || mask == nullptr || mask[t - cached] != 0);
      if (active[u]) {
        const size_t slot = size_t(table[t / block_size]) * block_size + size_t(t % block_size);
        const size_t offset = slot * kv_dim + size_t(kv_head) * HEAD_DIM + d0;
        load_f32x8(p.k_cache + offset, kf[u]);
        load_f32x8(p.v_cache + offset, vf[u]);
      } else {
#pragma unroll
        for (int d = 0; d < 8; ++d) kf[u][d] = vf[u][d] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= heads_here) break;  // uniform across the CTA
        float dot = 0.0f;
#pragma unroll
        for (int d = 0; d < 8; ++d) dot += qv[g][d] * kf[u][d];
#pragma unroll
        for (int offset = kLanes / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        if (active[u]) {
          const float s = dot * scale;
          const float m_new = fmaxf(m[g], s);
          const float correction = expf(m[g] - m_new);  // 0 on the first key (m = -inf)
          const float weight = expf(s - m_new);
          l[g] = l[g] * correction + weight;
#pragma unroll
          for (int d = 0; d < 8; ++d) acc[g][d] = acc[g][d] * correction + weight * vf[u][d];
          m[g] = m_new;
        }
      }
    }
  }

#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= heads_here) break;
    if (d0 == 0) {
      shared_m[stream][g] = m[g];
      shared_l[stream][g] = l[g];
    }
#pragma unroll
    for (int d = 0; d < 8; ++d) shared_acc[stream][g][d0 + d] = acc[g][d];
  }
  __syncthreads();

  // Merge the streams in a fixed order (deterministic run to run).
  for (int item = threadIdx.x; item < heads_here * HEAD_DIM; item += kThreads) {
    const int g = item / HEAD_DIM, d = item % HEAD_DIM;
    float merged = -INFINITY;
    for (int s = 0; s < kStreams; ++s) merged = fmaxf(merged, shared_m[s][g]);
    float sum = 0.0f, value = 0.0f;
    for (int s = 0; s < kStreams; ++s) {
      const float w = merge_weight(shared_m[s][g], merged);
      sum += shared_l[s][g] * w;
      value += shared_acc[s][g][d] * w;
    }
    if (p.partitions == 1) {
      // No visible key at all (a mask hiding everything, empty prefix): zeros, as cpu::attention.
      const size_t head_row = size_t(row) * p.shape.num_heads + size_t(head0 + g);
      p.out[head_row * HEAD_DIM + d] = __float2bfloat16(sum > 0.0f ? value / sum : 0.0f);
    } else {
      // Partials are indexed by the launch's row index (blockIdx.x), not the step's row: sized for batch.rows.
      const size_t launch_row = size_t(blockIdx.x) * p.shape.num_heads + size_t(head0 + g);
      float* partial = p.partials + (launch_row * p.partitions + part) * attention_partial_floats(HEAD_DIM);
      partial[d] = value;
      if (d == 0) {
        partial[HEAD_DIM] = merged;
        partial[HEAD_DIM + 1] = sum;
      }
    }
  }
}

__global__ void merge_partitions_kernel(const float* partials, const int32_t* row_list, int partitions, int num_heads,
                                        int head_dim, __nv_bfloat16* out) {
  const size_t launch_row = size_t(blockIdx.x) * num_heads + blockIdx.y;
  const int row = row_list ? row_list[blockIdx.x] : int(blockIdx.x);
  const size_t head_row = size_t(row) * num_heads + blockIdx.y;
  const size_t stride = attention_partial_floats(head_dim);
  const float* first = partials + launch_row * partitions * stride;
  float merged = -INFINITY;
  for (int part = 0; part < partitions; ++part) merged = fmaxf(merged, first[part * stride + head_dim]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.0f, value = 0.0f;
    for (int part = 0; part < partitions; ++part) {
      const float* partial = first + part * stride;
      const float w = merge_weight(partial[head_dim], merged);
      sum += partial[head_dim + 1] * w;
      value += partial[d] * w;
    }
    out[head_row * head_dim + d] = __float2bfloat16(sum > 0.0f ? value / sum : 0.0f);
  }
}

int subgroups_of(const AttentionShape& shape) {
  const int group = shape.num_heads / shape.num_kv_heads;
  return (group + kMaxGroup - 1) / kMaxGroup;
}

template <int HEAD_DIM>
void launch(const Params& params, cudaStream_t stream) {
  const dim3 grid(unsigned(params.batch.rows), unsigned(params.shape.num_kv_heads * params.subgroups),
                  unsigned(params.partitions));
  attention_kernel<HEAD_DIM><<<grid, kThreads, 0, stream>>>(params);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace

int attention_partitions(const AttentionBatch& batch, const AttentionShape& shape, int num_sms,
                         size_t partial_capacity_floats) {
  if (batch.rows <= 0 || batch.max_kv_len <= 0 || shape.num_kv_heads <= 0) return 1;
  const long long ctas_per_partition = (long long)batch.rows * shape.num_kv_heads * subgroups_of(shape);
  const long long target_ctas = 4LL * std::max(num_sms, 1);
  const long long by_length = (batch.max_kv_len + kMinPartitionKeys - 1) / kMinPartitionKeys;
  const long long by_occupancy = std::max(1LL, (target_ctas + ctas_per_partition - 1) / ctas_per_partition);
  long long parts = std::min(by_length, by_occupancy);
  const size_t per_partition = size_t(batch.rows) * shape.num_heads * attention_partial_floats(shape.head_dim);
  parts = std::min<long long>(parts, (long long)(partial_capacity_floats / per_partition));
  parts = std::min<long long>(parts, 65535);
  return int(std::max(parts, 1LL));
}

void paged_attention_bf16(const uint16_t* q, int q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                          const AttentionBatch& batch, const AttentionShape& shape, int partitions, float* partials,
                          uint16_t* out, cudaStream_t stream) {
  if (batch.rows <= 0) return;
  QED_KERNEL_REQUIRE(shape.num_kv_heads > 0 && shape.num_heads % shape.num_kv_heads == 0,
                     "paged attention: num_heads must be a positive multiple of num_kv_heads");
  QED_KERNEL_REQUIRE(shape.block_size > 0, "paged attention: block_size must be positive");
  QED_KERNEL_REQUIRE(q_stride % 8 == 0, "paged attention: q rows must start 16-byte aligned");
  QED_KERNEL_REQUIRE(batch.max_kv_len > 0, "paged attention: max_kv_len must be positive");
  QED_KERNEL_REQUIRE(partitions >= 1 && partitions <= 65535, "paged attention: partitions outside [1, 65535]");
  QED_KERNEL_REQUIRE(partitions == 1 || partials != nullptr, "paged attention: split-K needs a partials buffer");
  Params params{};
  params.batch = batch;
  params.shape = shape;
  params.q = as_bf16(q);
  params.q_stride = q_stride;
  params.k_cache = as_bf16(k_cache);
  params.v_cache = as_bf16(v_cache);
  params.partitions = partitions;
  params.partition_size = (batch.max_kv_len + partitions - 1) / partitions;
  params.subgroups = subgroups_of(shape);
  params.partials = partials;
  params.out = as_bf16(out);
  QED_KERNEL_REQUIRE(shape.num_kv_heads * params.subgroups <= 65535, "paged attention: too many KV heads");
  switch (shape.head_dim) {
    case 16:
      launch<16>(params, stream);
      break;
    case 32:
      launch<32>(params, stream);
      break;
    case 64:
      launch<64>(params, stream);
      break;
    case 128:
      launch<128>(params, stream);
      break;
    case 256:
      launch<256>(params, stream);
      break;
    default:
      throw_kernel_argument_error("paged attention: head_dim must be 16, 32, 64, 128 or 256");
  }
  if (partitions > 1) {
    merge_partitions_kernel<<<dim3(unsigned(batch.rows), unsigned(shape.num_heads)), kThreads, 0, stream>>>(
        partials, batch.row_list, partitions, shape.num_heads, shape.head_dim, as_bf16(out));
    QED_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace qed::cuda
