#pragma once
// The last step of the fused split-K merge, shared by the decode CTA (merge_if_last, attention_kernels.cu) and the
// verify CTA (verify_merge_if_last, attention_verify_tile.cuh): the CTA that finished last folds the partitions of
// its query rows into the output. (The verify emulation test includes it on the host with emulated intrinsics and
// __ldcg.)
//
// It is one CTA's serial tail on the step's critical path, so its global reads are issued together: (max, sum) of
// every (row, partition) in one pass into shared memory, then each thread's value loads for 4 dims of a row over
// kMergeBatch partitions at a time (16-byte loads: attention_partial_floats keeps partials 16-byte aligned). Each
// element still sums its partitions in order 0, 1, ..., so the result does not depend on which CTA merged.
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/fp8_convert.cuh"

namespace qed::cuda {
namespace {

constexpr int kMergeBatch = 16;  // partitions whose value loads one thread has in flight at once

// Weight of a partial result with running max m (log2 units) when the merged max is `merged`: 0 for an empty
// partial (m = -inf), which also keeps exp2(-inf - -inf) = NaN out when every partial is empty.
__device__ __forceinline__ float merge_weight(float m, float merged) {
  return m == -INFINITY ? 0.0f : exp2f(m - merged);
}

// rows_m query rows (m: a (row, head) pair), `parts` partitions each: partial(m, part) points at a partial (values
// [head_dim], then the max in log2 units and the sum), out_offset(m) is the element of row m's first output dim.
// Shared scratch: maxes and sums of rows_m × parts floats each, row_sums of rows_m. All `threads` threads of the CTA
// call it.
template <class PartialOf, class OutOffset>
__device__ void merge_partials(int threads, int rows_m, int parts, int head_dim, PartialOf partial,
                               OutOffset out_offset, float* maxes, float* sums, float* row_sums, __nv_bfloat16* out,
                               uint8_t* out_fp8, const float* out_fp8_scale) {
  const int tid = int(threadIdx.x);
  for (int item = tid; item < rows_m * parts; item += threads) {
    const float2 ms = __ldcg(reinterpret_cast<const float2*>(partial(item / parts, item % parts) + head_dim));
    maxes[item] = ms.x;
    sums[item] = ms.y;
  }
  __syncthreads();
  // maxes[] becomes each partition's weight; an empty partition (max -inf) weighs 0 and its values stay unread.
  for (int m = tid; m < rows_m; m += threads) {
    float* weight = maxes + m * parts;
    float merged = -INFINITY;
    for (int part = 0; part < parts; ++part) merged = fmaxf(merged, weight[part]);
    float sum = 0.0f;
    for (int part = 0; part < parts; ++part) {
      const float w = merge_weight(weight[part], merged);
      weight[part] = w;
      if (w != 0.0f) sum += sums[m * parts + part] * w;
    }
    row_sums[m] = sum;
  }
  __syncthreads();
  const float fp8_scale = out_fp8 ? *out_fp8_scale : 1.0f;
  const int quads = head_dim / 4;
  for (int item = tid; item < rows_m * quads; item += threads) {
    const int m = item / quads, d = (item % quads) * 4;
    const float* weight = maxes + m * parts;
    float value[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int part0 = 0; part0 < parts; part0 += kMergeBatch) {
      float4 x[kMergeBatch];
#pragma unroll
      for (int i = 0; i < kMergeBatch; ++i) {
        const int part = part0 + i;
        x[i] = part < parts && weight[part] != 0.0f ? __ldcg(reinterpret_cast<const float4*>(partial(m, part) + d))
                                                    : float4{0.0f, 0.0f, 0.0f, 0.0f};
      }
#pragma unroll
      for (int i = 0; i < kMergeBatch; ++i) {
        const float w = part0 + i < parts ? weight[part0 + i] : 0.0f;
        if (w != 0.0f) {
          value[0] += x[i].x * w;
          value[1] += x[i].y * w;
          value[2] += x[i].z * w;
          value[3] += x[i].w * w;
        }
      }
    }
    const float sum = row_sums[m];
    const size_t at = out_offset(m) + size_t(d);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const __nv_bfloat16 o = __float2bfloat16(sum > 0.0f ? value[e] / sum : 0.0f);
      out[at + e] = o;
      if (out_fp8) out_fp8[at + e] = quantize_e4m3(__bfloat162float(o), fp8_scale);
    }
  }
}

}  // namespace
}  // namespace qed::cuda
