#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/attention_merge.cuh"
#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/fp8_convert.cuh"
#include "backend/cuda/pdl.cuh"

namespace qed::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxGroup = 8;  // query heads per CTA; larger GQA groups take several CTAs per KV head
// Fewest keys a partition gets (a CTA's 4 warps x 16 keys on the tensor-core path).
constexpr int kMinPartitionKeys = 64;
constexpr float kLog2e = 1.4426950408889634f;
constexpr long long kTargetPartitionKeys = 512;

struct Params {
  AttentionBatch batch;
  AttentionShape shape;
  const __nv_bfloat16* q;
  int q_stride;
  const void* k_cache;  // bf16 or E4M3 codes
  const void* v_cache;
  // What a stored K (V) value is multiplied by: 1 for bf16; for FP8, scale × 2^8 (the kernels read codes × 2^-8).
  float k_dequant, v_dequant;
  int partitions;
  int subgroups;  // CTAs per KV head along grid.y
  float* partials;
  __nv_bfloat16* out;
  uint8_t* out_fp8;  // optional: the E4M3 codes of out / *out_fp8_scale as well (the FP8 o_proj's input)
  const float* out_fp8_scale;
  // With partitions > 1: one counter per (launch row, blockIdx.y), zero between launches; the last CTA of a (row,
  // KV head group) to finish merges its partitions (merge_if_last). Null: the separate merge kernel does.
  uint32_t* merge_counters;
};

// Partitions the fused merge takes (its weights live in shared memory); more go to merge_partitions_kernel.
constexpr int kMaxFusedMergePartitions = 64;
// Decode launches of up to this many rows run the tensor-core CTA with the batched merge tail (merge_if_last).
constexpr int kBatchedMergeMaxRows = 2;

// What a CTA (blockIdx.x = launch row, blockIdx.y = KV head x subgroup) attends with.
struct RowView {
  int launch_row, row, kv_head, head0, heads_here;
  int cached, kv_len;
  const int32_t* table;
  const uint8_t* mask;  // the row's mask over the sequence's new tokens, or null (causal)
};

__device__ __forceinline__ RowView row_view(const Params& p) {
  const AttentionBatch& b = p.batch;
  RowView v;
  v.launch_row = int(blockIdx.x);
  v.row = b.row_list ? b.row_list[blockIdx.x] : int(blockIdx.x);
  v.kv_head = int(blockIdx.y) / p.subgroups;
  const int group = p.shape.num_heads / p.shape.num_kv_heads;
  const int first_in_group = (int(blockIdx.y) % p.subgroups) * kMaxGroup;
  v.head0 = v.kv_head * group + first_in_group;
  v.heads_here = min(kMaxGroup, group - first_in_group);
  const int seq = b.row_seq[v.row];
  const int qi = v.row - b.seq_q_start[seq];  // index among the sequence's new tokens
  const int n = b.seq_num_new[seq];
  v.cached = b.seq_num_cached[seq];
  const int mask_offset = b.seq_mask_offset[seq];
  v.table = b.block_tables + b.seq_block_offset[seq];
  v.mask = mask_offset >= 0 ? b.masks + mask_offset + size_t(qi) * n : nullptr;
  // Causal: new tokens after qi are past the end; with a mask every new token is a candidate, the mask decides.
  v.kv_len = v.cached + (v.mask ? n : qi + 1);
  return v;
}

// Keys per partition of one row: each row splits its own keys. A CUDA-graph decode step launches for a context
// bucket up to twice the real context; splitting the bucket instead left up to half the CTAs empty and gave the
// others twice the keys (graphs were slower than eager launches at 12 x 2400). Multiples of 16: whole warp chunks.
__device__ __forceinline__ int row_partition_size(int kv_len, int partitions) {
  const int even = (kv_len + partitions - 1) / partitions;
  return max(kMinPartitionKeys, (even + 15) / 16 * 16);
}

__device__ __forceinline__ float* partial_of(const Params& p, const RowView& v, int head, int part) {
  // Partials are indexed by the launch's row index, not the step's row: sized for batch.rows.
  const size_t launch_head = size_t(v.launch_row) * p.shape.num_heads + size_t(head);
  return p.partials + (launch_head * p.partitions + part) * attention_partial_floats(p.shape.head_dim);
}

// A partition past this row's keys: max -inf and sum 0, weight 0 in the merge, which then never reads its values.
__device__ __forceinline__ void write_empty_partials(const Params& p, const RowView& v, int part) {
  if (p.partitions == 1) return;  // cannot happen: every row sees at least one key slot
  for (int g = int(threadIdx.x); g < v.heads_here; g += int(blockDim.x)) {
    float* partial = partial_of(p, v, v.head0 + g, part);
    partial[p.shape.head_dim] = -INFINITY;
    partial[p.shape.head_dim + 1] = 0.0f;
  }
}

// Element d of query head head0 + g: the output itself with one partition, else the partial (unnormalized value,
// max in log2 units, sum) for the merge.
__device__ __forceinline__ void write_result(const Params& p, const RowView& v, int part, int g, int d, float max_log2,
                                             float sum, float value) {
  if (p.partitions == 1) {
    // No visible key at all (a mask hiding everything, empty prefix): zeros, as cpu::attention.
    const size_t at = (size_t(v.row) * p.shape.num_heads + size_t(v.head0 + g)) * p.shape.head_dim + size_t(d);
    const __nv_bfloat16 o = __float2bfloat16(sum > 0.0f ? value / sum : 0.0f);
    p.out[at] = o;
    // The code of the bf16 output, as quantize_fp8_bf16 on out would give.
    if (p.out_fp8) p.out_fp8[at] = quantize_e4m3(__bfloat162float(o), *p.out_fp8_scale);
    return;
  }
  float* partial = partial_of(p, v, v.head0 + g, part);
  partial[d] = value;
  if (d == 0) {
    partial[p.shape.head_dim] = max_log2;
    partial[p.shape.head_dim + 1] = sum;
  }
}

// The split-K merge folded into the attention kernel: every CTA of a (row, KV head group) counts itself done once
// its partials are written (fence, then one atomic); the last one re-arms the counter and merges the group's
// partitions in partition order (deterministic whichever CTA is last). Partials are read through L2 (__ldcg):
// other CTAs wrote them. Saves the merge launch, and its wait for the whole attention grid, per layer.
// BATCHED: the tail as merge_partials (attention_merge.cuh), which issues the merging CTA's loads together; else
// one element's partitions at a time. Same results. Measured on an H200 (14B shape, 2026-12-02): with BATCHED the
// tensor-core CTA made decode steps 2.2% (bf16) and 3.2% (FP8) shorter at batch 1, but the same kernel ran 5-10%
// slower at 4-32 rows x 1024-4500 keys (bench_decode_attention: its whole code changed with it, not only the
// merge), so only launches of few rows take it (kBatchedMergeMaxRows).
template <bool BATCHED>
__device__ void merge_if_last(const Params& p, const RowView& v) {
  __shared__ bool last;
  const int parts = p.partitions, head_dim = p.shape.head_dim;
  __threadfence();  // this CTA's partials, visible device-wide before it counts itself done
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t* counter = p.merge_counters + size_t(v.launch_row) * gridDim.y + blockIdx.y;
    last = atomicAdd(counter, 1u) == uint32_t(parts - 1);
    if (last) *counter = 0;  // every other CTA of the group is done with it
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  auto partial = [&](int g, int part) -> const float* { return partial_of(p, v, v.head0 + g, part); };
  auto out_offset = [&](int g) { return (size_t(v.row) * p.shape.num_heads + size_t(v.head0 + g)) * head_dim; };
  if constexpr (BATCHED) {
    __shared__ float maxes[kMaxGroup * kMaxFusedMergePartitions], sums[kMaxGroup * kMaxFusedMergePartitions];
    __shared__ float row_sums[kMaxGroup];
    merge_partials(int(blockDim.x), v.heads_here, parts, head_dim, partial, out_offset, maxes, sums, row_sums, p.out,
                   p.out_fp8, p.out_fp8_scale);
  } else {
    __shared__ float weights[kMaxGroup][kMaxFusedMergePartitions];
    __shared__ float row_sums[kMaxGroup];
    for (int item = int(threadIdx.x); item < v.heads_here * parts; item += int(blockDim.x)) {
      const int g = item / parts, part = item % parts;
      weights[g][part] = __ldcg(partial(g, part) + head_dim);  // the max, for now
    }
    __syncthreads();
    if (int(threadIdx.x) < v.heads_here) {
      const int g = int(threadIdx.x);
      float merged = -INFINITY;
      for (int part = 0; part < parts; ++part) merged = fmaxf(merged, weights[g][part]);
      float sum = 0.0f;
      for (int part = 0; part < parts; ++part) {
        const float w = merge_weight(weights[g][part], merged);
        weights[g][part] = w;
        if (w != 0.0f) sum += __ldcg(partial(g, part) + head_dim + 1) * w;
      }
      row_sums[g] = sum;
    }
    __syncthreads();
    const float fp8_scale = p.out_fp8 ? *p.out_fp8_scale : 1.0f;
    for (int item = int(threadIdx.x); item < v.heads_here * head_dim; item += int(blockDim.x)) {
      const int g = item / head_dim, d = item % head_dim;
      float value = 0.0f;
      for (int part = 0; part < parts; ++part) {
        const float w = weights[g][part];
        if (w != 0.0f) value += __ldcg(partial(g, part) + d) * w;  // empty partials: unwritten
      }
      const float sum = row_sums[g];
      const size_t at = out_offset(g) + size_t(d);
      const __nv_bfloat16 o = __float2bfloat16(sum > 0.0f ? value / sum : 0.0f);
      p.out[at] = o;
      if (p.out_fp8) p.out_fp8[at] = quantize_e4m3(__bfloat162float(o), fp8_scale);
    }
  }
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &pair, sizeof(bits));
  return bits;
}

// d += A·B for an A whose rows 8-15 are zero (at most 8 query heads): only the accumulators of rows 0-7 live in
// registers across calls; rows 8-15 start at zero and their results are dropped, saving half the accumulator
// registers (with them the kernel needed 182 registers, two CTAs per SM).
template <bool F16>
__device__ __forceinline__ void mma_rows0to7(float (&d)[2], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
  if constexpr (F16) {
    asm("{\n"
        ".reg .f32 unused2, unused3, zero;\n"
        "mov.f32 zero, 0f00000000;\n"
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, unused2, unused3}, {%2, %3, %4, %5}, {%6, %7}, "
        "{%0, %1, zero, zero};\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1])
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
  } else {
    asm("{\n"
        ".reg .f32 unused2, unused3, zero;\n"
        "mov.f32 zero, 0f00000000;\n"
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, unused2, unused3}, {%2, %3, %4, %5}, {%6, %7}, "
        "{%0, %1, zero, zero};\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1])
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
  }
}

// d += A·B, all 16 rows (the verify CTA's T x G rows).
template <bool F16>
__device__ __forceinline__ void mma_m16n8k16_f32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (F16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// cp.async (sm_80+): 16 bytes global → shared without a register round trip; `valid` false writes 16 zero bytes and
// reads nothing.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void cp_async_16_shared(void* dst, const void* src, bool valid) {
  cp_async_16(shared_address(dst), src, valid);
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int PENDING>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
}

// MMA operand helpers for the bf16 (F16 = false) and fp16 (FP8 cache) variants.
template <bool F16>
__device__ __forceinline__ uint32_t pack_operands(float lo, float hi) {
  if constexpr (F16) {
    const __half2 pair = __floats2half2_rn(lo, hi);
    uint32_t bits;
    memcpy(&bits, &pair, sizeof(bits));
    return bits;
  } else {
    return pack_bf16x2(lo, hi);
  }
}

template <bool F16>
__device__ __forceinline__ float round_to_operand(float x) {
  if constexpr (F16) {
    return __half2float(__float2half_rn(x));
  } else {
    return __bfloat162float(__float2bfloat16(x));
  }
}

__device__ __forceinline__ uint32_t bf16x2_to_f16x2(uint32_t bits) {
  __nv_bfloat162 pair;
  memcpy(&pair, &bits, sizeof(bits));
  const float2 f = __bfloat1622float2(pair);
  return pack_operands<true>(f.x, f.y);
}

__device__ __forceinline__ uint4 operand_words(uint4 bf16_words) {
  return bf16_words;
}
__device__ __forceinline__ uint4 operand_words(uint2 codes) {
  uint4 w;
  e4m3x4_to_f16x2_times_2m8(codes.x, w.x, w.y);
  e4m3x4_to_f16x2_times_2m8(codes.y, w.z, w.w);
  return w;
}

// Eight cache elements as floats: bf16 values, or codes × 2^-8 of an FP8 cache.
__device__ __forceinline__ void load_cache_f32x8(const __nv_bfloat16* src, float (&out)[8]) {
  load_f32x8(src, out);
}
__device__ __forceinline__ void load_cache_f32x8(const uint8_t* src, float (&out)[8]) {
  const uint4 w = operand_words(*reinterpret_cast<const uint2*>(src));
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 pair;
    memcpy(&pair, &words[i], sizeof(pair));
    const float2 f = __half22float2(pair);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// The CUDA-core kernel, for head dims the tensor-core one does not take (16, 32, 256): 128 threads stream the
// partition's keys, head_dim/8 lanes per key with 16-byte loads, an online softmax per query head.
template <int HEAD_DIM, bool FP8>
__global__ void __launch_bounds__(kThreads) attention_kernel(Params p) {
  using Element = std::conditional_t<FP8, uint8_t, __nv_bfloat16>;
  constexpr int kLanes = HEAD_DIM / 8;         // lanes sharing one key, 8 dims (16 bytes) each
  constexpr int kStreams = kThreads / kLanes;  // keys in flight per CTA
  __shared__ float shared_m[kStreams][kMaxGroup];
  __shared__ float shared_l[kStreams][kMaxGroup];
  __shared__ float shared_acc[kStreams][kMaxGroup][HEAD_DIM];

  // q, the caches and the step's metadata may all come from the kernels before; every CTA waits, empty ones too.
  pdl_wait();
  pdl_trigger();
  const RowView v = row_view(p);
  const int heads_here = v.heads_here;
  const int part = int(blockIdx.z);
  const int psize = row_partition_size(v.kv_len, p.partitions);
  const int begin = part * psize;
  const int end = min(v.kv_len, begin + psize);
  if (begin >= end) {
    write_empty_partials(p, v, part);
    if (p.merge_counters) merge_if_last<false>(p, v);  // an empty partition counts too
    return;
  }

  const int stream = threadIdx.x / kLanes;
  const int d0 = (threadIdx.x % kLanes) * 8;
  const int block_size = p.shape.block_size;
  const size_t kv_dim = size_t(p.shape.num_kv_heads) * HEAD_DIM;
  const float scale_log2 = p.shape.scale * kLog2e * p.k_dequant;

  float qv[kMaxGroup][8];
  float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][8];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g < heads_here) {
      load_f32x8(p.q + size_t(v.row) * p.q_stride + size_t(v.head0 + g) * HEAD_DIM + d0, qv[g]);
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
  // load nothing and update nothing. A round loads kUnroll keys per stream before using any.
  constexpr int kUnroll = kStreams >= 32 ? 1 : 4;
  for (int base = begin; base < end; base += kStreams * kUnroll) {
    float kf[kUnroll][8], vf[kUnroll][8];
    bool active[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = base + u * kStreams + stream;
      active[u] = t < end && (t < v.cached || v.mask == nullptr || v.mask[t - v.cached] != 0);
      if (active[u]) {
        const size_t slot = size_t(v.table[t / block_size]) * block_size + size_t(t % block_size);
        const size_t offset = slot * kv_dim + size_t(v.kv_head) * HEAD_DIM + d0;
        load_cache_f32x8(static_cast<const Element*>(p.k_cache) + offset, kf[u]);
        load_cache_f32x8(static_cast<const Element*>(p.v_cache) + offset, vf[u]);
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
          const float s = dot * scale_log2;
          const float m_new = fmaxf(m[g], s);
          const float correction = exp2f(m[g] - m_new);  // 0 on the first key (m = -inf)
          const float weight = exp2f(s - m_new);
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
    write_result(p, v, part, g, d, merged, sum, value * p.v_dequant);
  }
  if (p.merge_counters) merge_if_last<false>(p, v);
}

}  // namespace
}  // namespace qed::cuda

#include "backend/cuda/attention_mma_tile.cuh"
#include "backend/cuda/attention_verify_tile.cuh"

namespace qed::cuda {
namespace {

// One CTA per (launch row, query head). Every load is independent of the others: the partitions' maxima and sums
// strided over the threads (a serial loop over them in one thread was a chain of dependent L2 round trips, as many
// as there are partitions: measured 27.6 us at 38 partitions vs 19.2 at 16, rows 1, context 2400), their weights
// into shared memory, then each thread sums its dims over the partitions. Sums run in a fixed order (deterministic).
constexpr int kMaxMergeSharedPartitions = 1024;

__device__ __forceinline__ float block_reduce(float x, float* scratch, bool take_max) {
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, x, offset);
    x = take_max ? fmaxf(x, other) : x + other;
  }
  __syncthreads();  // scratch is reused by consecutive reductions
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  float total = scratch[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) total = take_max ? fmaxf(total, scratch[w]) : total + scratch[w];
  return total;
}

// One (row, head): partials at `first` (partitions x attention_partial_floats), the output row at head_row.
__device__ void merge_one(const float* __restrict__ first, size_t head_row, int partitions, int head_dim,
                          __nv_bfloat16* __restrict__ out, uint8_t* __restrict__ out_fp8,
                          const float* __restrict__ out_fp8_scale) {
  __shared__ float weights[kMaxMergeSharedPartitions];
  __shared__ float scratch[kThreads / 32];
  const float fp8_scale = out_fp8 ? *out_fp8_scale : 1.0f;
  const size_t stride = attention_partial_floats(head_dim);

  float local_max = -INFINITY;
  for (int part = int(threadIdx.x); part < partitions; part += kThreads) {
    local_max = fmaxf(local_max, first[part * stride + head_dim]);
  }
  const float merged = block_reduce(local_max, scratch, true);
  float local_sum = 0.0f;
  for (int part = int(threadIdx.x); part < partitions; part += kThreads) {
    const float w = merge_weight(first[part * stride + head_dim], merged);
    if (part < kMaxMergeSharedPartitions) weights[part] = w;
    if (w != 0.0f) local_sum += first[part * stride + head_dim + 1] * w;
  }
  const float sum = block_reduce(local_sum, scratch, false);  // its barriers also publish `weights`
  for (int d = int(threadIdx.x); d < head_dim; d += kThreads) {
    float value = 0.0f;
#pragma unroll 4
    for (int part = 0; part < partitions; ++part) {
      const float w =
          part < kMaxMergeSharedPartitions ? weights[part] : merge_weight(first[part * stride + head_dim], merged);
      if (w != 0.0f) value += first[part * stride + d] * w;  // empty partials leave their values unwritten
    }
    const __nv_bfloat16 o = __float2bfloat16(sum > 0.0f ? value / sum : 0.0f);
    out[head_row * head_dim + d] = o;
    if (out_fp8) out_fp8[head_row * head_dim + d] = quantize_e4m3(__bfloat162float(o), fp8_scale);
  }
}

__global__ void __launch_bounds__(kThreads)
    merge_partitions_kernel(const float* __restrict__ partials, const int32_t* __restrict__ row_list, int partitions,
                            int num_heads, int head_dim, __nv_bfloat16* __restrict__ out, uint8_t* __restrict__ out_fp8,
                            const float* __restrict__ out_fp8_scale) {
  pdl_wait();
  pdl_trigger();
  const size_t launch_row = size_t(blockIdx.x) * num_heads + blockIdx.y;
  const int row = row_list ? row_list[blockIdx.x] : int(blockIdx.x);
  const size_t head_row = size_t(row) * num_heads + blockIdx.y;
  const float* first = partials + launch_row * partitions * attention_partial_floats(head_dim);
  merge_one(first, head_row, partitions, head_dim, out, out_fp8, out_fp8_scale);
}

// The verify launch's merge: CTA (sequence entry, head, new row); partials indexed by the step's row.
__global__ void __launch_bounds__(kThreads)
    merge_verify_partitions_kernel(const float* __restrict__ partials, AttentionBatch batch,
                                   const int32_t* __restrict__ seq_list, int partitions, int num_heads, int head_dim,
                                   __nv_bfloat16* __restrict__ out, uint8_t* __restrict__ out_fp8,
                                   const float* __restrict__ out_fp8_scale) {
  pdl_wait();
  pdl_trigger();
  const int seq = seq_list[blockIdx.x];
  if (int(blockIdx.z) >= batch.seq_num_new[seq]) return;
  const int row = batch.seq_q_start[seq] + int(blockIdx.z);
  const size_t head_row = size_t(row) * num_heads + blockIdx.y;
  const float* first = partials + head_row * partitions * attention_partial_floats(head_dim);
  merge_one(first, head_row, partitions, head_dim, out, out_fp8, out_fp8_scale);
}

int subgroups_of(const AttentionShape& shape) {
  const int group = shape.num_heads / shape.num_kv_heads;
  return (group + kMaxGroup - 1) / kMaxGroup;
}

template <int HEAD_DIM, bool FP8>
void launch(const Params& params, DecodeKernel kernel, cudaStream_t stream) {
  const dim3 grid(unsigned(params.batch.rows), unsigned(params.shape.num_kv_heads * params.subgroups),
                  unsigned(params.partitions));
  if constexpr (HEAD_DIM == 64 || HEAD_DIM == 128) {
    if (kernel == DecodeKernel::TensorCoresPipelined) {
      constexpr int bytes = MmaRing<HEAD_DIM, FP8>::kBytes;
      // Above 48 KiB a kernel's dynamic shared memory must be opted into; once per instantiation, so never inside a
      // CUDA-graph capture (a graph's first step runs eagerly). A device with less shared memory per block than the
      // ring (sm_89: 99 KiB) keeps the register-loading CTA.
      static const bool fits = [] {
        int device = 0, optin = 0;
        QED_CUDA_CHECK(cudaGetDevice(&device));
        QED_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        if (optin < bytes) return false;
        QED_CUDA_CHECK(cudaFuncSetAttribute(attention_mma_kernel<HEAD_DIM, FP8, true>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
        return true;
      }();
      if (fits) {
        launch_kernel(attention_mma_kernel<HEAD_DIM, FP8, true>, grid, dim3(kThreads), bytes, stream, true, params);
        return;
      }
    }
    if (kernel != DecodeKernel::CudaCores) {
      if (params.batch.rows <= kBatchedMergeMaxRows) {
        launch_kernel(attention_mma_kernel<HEAD_DIM, FP8, false, true>, grid, dim3(kThreads), 0, stream, true, params);
      } else {
        launch_kernel(attention_mma_kernel<HEAD_DIM, FP8, false>, grid, dim3(kThreads), 0, stream, true, params);
      }
      return;
    }
  }
  launch_kernel(attention_kernel<HEAD_DIM, FP8>, grid, dim3(kThreads), 0, stream, true, params);
}

template <bool FP8>
void launch_for_head_dim(const Params& params, DecodeKernel kernel, cudaStream_t stream) {
  switch (params.shape.head_dim) {
    case 16:
      return launch<16, FP8>(params, kernel, stream);
    case 32:
      return launch<32, FP8>(params, kernel, stream);
    case 64:
      return launch<64, FP8>(params, kernel, stream);
    case 128:
      return launch<128, FP8>(params, kernel, stream);
    case 256:
      return launch<256, FP8>(params, kernel, stream);
    default:
      throw_kernel_argument_error("paged attention: head_dim must be 16, 32, 64, 128 or 256");
  }
}

}  // namespace

size_t attention_merge_counters(int rows, const AttentionShape& shape) {
  if (shape.num_kv_heads <= 0) return 0;
  return size_t(std::max(rows, 0)) * size_t(std::max(shape.num_kv_heads, 0)) * size_t(subgroups_of(shape));
}

int attention_partitions(const AttentionBatch& batch, const AttentionShape& shape, int num_sms,
                         size_t partial_capacity_floats) {
  if (batch.rows <= 0 || batch.max_kv_len <= 0 || shape.num_kv_heads <= 0) return 1;
  const long long ctas_per_partition = (long long)batch.rows * shape.num_kv_heads * subgroups_of(shape);
  // Measured on an H200 (bench_decode_attention, 14B shape, 2026-12-02): about kTargetPartitionKeys keys per
  // partition was fastest from 12 to 32 rows (rows 12 x 2400 keys: 8 partitions 62.9 us, 11: 67.8, 16: 79.4, 64:
  // 118.9; rows 32: 5 best), since each CTA pays a chain of dependent loads (row, sequence, block table) before its
  // first K/V byte and the merge reads every partial; but a single row needs a CTA per SM (rows 1 x 2400: 16
  // partitions 19.2 us, 8: 20.4, 38: 27.6).
  const long long by_keys = (batch.max_kv_len + kTargetPartitionKeys - 1) / kTargetPartitionKeys;
  const long long fill_sms = (std::max(num_sms, 1) + ctas_per_partition - 1) / ctas_per_partition;
  const long long by_length = (batch.max_kv_len + kMinPartitionKeys - 1) / kMinPartitionKeys;
  long long parts = std::min(std::max(by_keys, fill_sms), by_length);
  const size_t per_partition = size_t(batch.rows) * shape.num_heads * attention_partial_floats(shape.head_dim);
  parts = std::min<long long>(parts, (long long)(partial_capacity_floats / per_partition));
  parts = std::min<long long>(parts, 65535);
  return int(std::max(parts, 1LL));
}

void paged_attention(const uint16_t* q, int q_stride, const KvCacheView& cache, const AttentionBatch& batch,
                     const AttentionShape& shape, int partitions, float* partials, uint16_t* out, cudaStream_t stream,
                     DecodeKernel kernel, uint8_t* out_fp8, const float* out_fp8_scale, uint32_t* merge_counters) {
  if (batch.rows <= 0) return;
  QED_KERNEL_REQUIRE(!out_fp8 || out_fp8_scale, "paged attention: an fp8 output needs its scale");
  QED_KERNEL_REQUIRE(shape.num_kv_heads > 0 && shape.num_heads % shape.num_kv_heads == 0,
                     "paged attention: num_heads must be a positive multiple of num_kv_heads");
  QED_KERNEL_REQUIRE(shape.block_size > 0, "paged attention: block_size must be positive");
  QED_KERNEL_REQUIRE(q_stride % 8 == 0, "paged attention: q rows must start 16-byte aligned");
  QED_KERNEL_REQUIRE(batch.max_kv_len > 0, "paged attention: max_kv_len must be positive");
  QED_KERNEL_REQUIRE(partitions >= 1 && partitions <= 65535, "paged attention: partitions outside [1, 65535]");
  QED_KERNEL_REQUIRE(partitions == 1 || partials != nullptr, "paged attention: split-K needs a partials buffer");
  QED_KERNEL_REQUIRE(!cache.fp8 || (cache.k_scale > 0.0f && cache.v_scale > 0.0f),
                     "paged attention: FP8 cache scales must be positive");
  Params params{};
  params.batch = batch;
  params.shape = shape;
  params.q = as_bf16(q);
  params.q_stride = q_stride;
  params.k_cache = cache.k;
  params.v_cache = cache.v;
  // The FP8 kernels read code × 2^-8 (e4m3x4_to_f16x2_times_2m8).
  params.k_dequant = cache.fp8 ? cache.k_scale * 256.0f : 1.0f;
  params.v_dequant = cache.fp8 ? cache.v_scale * 256.0f : 1.0f;
  params.partitions = partitions;
  params.subgroups = subgroups_of(shape);
  params.partials = partials;
  params.out = as_bf16(out);
  params.out_fp8 = out_fp8;
  params.out_fp8_scale = out_fp8_scale;
  // QED_FUSED_MERGE=0: the merge kernel even with counters (A/B runs).
  static const bool fused_merge_allowed = env_flag("QED_FUSED_MERGE", true);
  const bool fused_merge =
      fused_merge_allowed && partitions > 1 && partitions <= kMaxFusedMergePartitions && merge_counters != nullptr;
  params.merge_counters = fused_merge ? merge_counters : nullptr;
  QED_KERNEL_REQUIRE(shape.num_kv_heads * params.subgroups <= 65535, "paged attention: too many KV heads");
  if (cache.fp8) {
    launch_for_head_dim<true>(params, kernel, stream);
  } else {
    launch_for_head_dim<false>(params, kernel, stream);
  }
  if (partitions > 1 && !fused_merge) {
    launch_kernel(merge_partitions_kernel, dim3(unsigned(batch.rows), unsigned(shape.num_heads)), dim3(kThreads), 0,
                  stream, true, static_cast<const float*>(partials), batch.row_list, partitions, shape.num_heads,
                  shape.head_dim, as_bf16(out), out_fp8, out_fp8_scale);
  }
}

void paged_attention_bf16(const uint16_t* q, int q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                          const AttentionBatch& batch, const AttentionShape& shape, int partitions, float* partials,
                          uint16_t* out, cudaStream_t stream, DecodeKernel kernel) {
  const KvCacheView cache{k_cache, v_cache, false, 1.0f, 1.0f};
  paged_attention(q, q_stride, cache, batch, shape, partitions, partials, out, stream, kernel);
}

bool attention_verify_supports(const AttentionShape& shape, int max_rows_per_seq) {
  if (shape.num_kv_heads <= 0 || shape.num_heads % shape.num_kv_heads != 0) return false;
  const int group = shape.num_heads / shape.num_kv_heads;
  return (shape.head_dim == 64 || shape.head_dim == 128) && group <= kMaxGroup && max_rows_per_seq >= 1 &&
         max_rows_per_seq * group <= kVerifyMaxM;
}

bool verify_attention_enabled() {
  static const bool enabled = env_flag("QED_VERIFY_ATTENTION", true);
  return enabled;
}

int attention_verify_partitions(int seqs, int max_kv_len, int step_rows, const AttentionShape& shape, int num_sms,
                                size_t partial_capacity_floats) {
  if (seqs <= 0 || max_kv_len <= 0 || shape.num_kv_heads <= 0) return 1;
  // As attention_partitions, with a CTA per (sequence, KV head) per partition.
  const long long ctas_per_partition = (long long)seqs * shape.num_kv_heads;
  const long long by_keys = (max_kv_len + kTargetPartitionKeys - 1) / kTargetPartitionKeys;
  const long long fill_sms = (std::max(num_sms, 1) + ctas_per_partition - 1) / ctas_per_partition;
  const long long by_length = (max_kv_len + kMinPartitionKeys - 1) / kMinPartitionKeys;
  long long parts = std::min(std::max(by_keys, fill_sms), by_length);
  const size_t per_partition =
      size_t(std::max(step_rows, 1)) * shape.num_heads * attention_partial_floats(shape.head_dim);
  parts = std::min<long long>(parts, (long long)(partial_capacity_floats / per_partition));
  parts = std::min<long long>(parts, 65535);
  return int(std::max(parts, 1LL));
}

void paged_attention_verify(const uint16_t* q, int q_stride, const KvCacheView& cache, const AttentionBatch& batch,
                            const int32_t* seq_list, int seq_count, int max_rows_per_seq, const AttentionShape& shape,
                            int partitions, float* partials, uint16_t* out, cudaStream_t stream, uint8_t* out_fp8,
                            const float* out_fp8_scale, uint32_t* merge_counters, int slot_rows) {
  if (seq_count <= 0) return;
  QED_KERNEL_REQUIRE(attention_verify_supports(shape, max_rows_per_seq),
                     "verify attention: head_dim 64/128, group <= 8, rows x group <= 64");
  QED_KERNEL_REQUIRE(!out_fp8 || out_fp8_scale, "verify attention: an fp8 output needs its scale");
  QED_KERNEL_REQUIRE(shape.block_size > 0, "verify attention: block_size must be positive");
  QED_KERNEL_REQUIRE(q_stride % 8 == 0, "verify attention: q rows must start 16-byte aligned");
  QED_KERNEL_REQUIRE(partitions >= 1 && partitions <= 65535, "verify attention: partitions outside [1, 65535]");
  QED_KERNEL_REQUIRE(partitions == 1 || partials != nullptr, "verify attention: split-K needs a partials buffer");
  QED_KERNEL_REQUIRE(!cache.fp8 || (cache.k_scale > 0.0f && cache.v_scale > 0.0f),
                     "verify attention: FP8 cache scales must be positive");
  VerifyParams params{};
  params.batch = batch;
  params.seq_list = seq_list;
  params.shape = shape;
  params.q = as_bf16(q);
  params.q_stride = q_stride;
  params.k_cache = cache.k;
  params.v_cache = cache.v;
  params.k_dequant = cache.fp8 ? cache.k_scale * 256.0f : 1.0f;
  params.v_dequant = cache.fp8 ? cache.v_scale * 256.0f : 1.0f;
  params.partitions = partitions;
  params.partials = partials;
  params.out = as_bf16(out);
  params.out_fp8 = out_fp8;
  params.out_fp8_scale = out_fp8_scale;
  params.slot_rows = slot_rows;
  static const bool fused_merge_allowed = env_flag("QED_FUSED_MERGE", true);
  const bool fused_merge =
      fused_merge_allowed && partitions > 1 && partitions <= kMaxFusedMergePartitions && merge_counters != nullptr;
  params.merge_counters = fused_merge ? merge_counters : nullptr;
  const dim3 grid(unsigned(seq_count), unsigned(shape.num_kv_heads), unsigned(partitions));
  const bool fp8 = cache.fp8;
  if (shape.head_dim == 64) {
    launch_kernel(fp8 ? attention_verify_kernel<64, true> : attention_verify_kernel<64, false>, grid, dim3(kThreads), 0,
                  stream, true, params);
  } else {
    launch_kernel(fp8 ? attention_verify_kernel<128, true> : attention_verify_kernel<128, false>, grid, dim3(kThreads),
                  0, stream, true, params);
  }
  if (partitions > 1 && !fused_merge) {
    launch_kernel(merge_verify_partitions_kernel,
                  dim3(unsigned(seq_count), unsigned(shape.num_heads), unsigned(max_rows_per_seq)), dim3(kThreads), 0,
                  stream, true, static_cast<const float*>(partials), batch, seq_list, partitions, shape.num_heads,
                  shape.head_dim, as_bf16(out), out_fp8, out_fp8_scale);
  }
}

}  // namespace qed::cuda
