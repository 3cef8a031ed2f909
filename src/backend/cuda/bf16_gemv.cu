#include <cuda_bf16.h>

#include "backend/cuda/bf16_gemv.h"
#include "backend/cuda/bf16_vec.cuh"
#include "backend/cuda/cuda_check.h"

namespace qed::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kFeaturesPerWarp = 2;  // two weight rows share each load of x
constexpr int kUnroll = 4;           // 16-byte weight loads in flight per lane and feature

__device__ __forceinline__ void to_f32x8(const uint4& raw, float (&out)[8]) {
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

template <int ROWS>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                const __nv_bfloat16* __restrict__ bias, void* __restrict__ y, bool f32_out, int out, int in) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n0 = (blockIdx.x * kWarps + warp) * kFeaturesPerWarp;
  if (n0 >= out) return;  // whole warps only: no barrier below
  const int features = min(kFeaturesPerWarp, out - n0);
  const uint4* rows[kFeaturesPerWarp];
#pragma unroll
  for (int f = 0; f < kFeaturesPerWarp; ++f) {
    rows[f] = reinterpret_cast<const uint4*>(w + size_t(n0 + min(f, features - 1)) * in);
  }
  float acc[ROWS][kFeaturesPerWarp] = {};
  const int vectors = in / 8;
  for (int base = lane; base < vectors; base += 32 * kUnroll) {
    uint4 wv[kFeaturesPerWarp][kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int v = base + u * 32;
#pragma unroll
      for (int f = 0; f < kFeaturesPerWarp; ++f) {
        // Streamed once: don't let the weights push x (re-read by every warp) out of L1.
        wv[f][u] = v < vectors ? __ldcs(rows[f] + v) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int v = base + u * 32;
      if (v >= vectors) break;
      float wf[kFeaturesPerWarp][8];
#pragma unroll
      for (int f = 0; f < kFeaturesPerWarp; ++f) to_f32x8(wv[f][u], wf[f]);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        float xf[8];
        to_f32x8(__ldg(reinterpret_cast<const uint4*>(x + size_t(r) * in) + v), xf);
#pragma unroll
        for (int f = 0; f < kFeaturesPerWarp; ++f) {
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[r][f] += xf[j] * wf[f][j];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
#pragma unroll
    for (int f = 0; f < kFeaturesPerWarp; ++f) {
      float sum = acc[r][f];
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      if (lane == 0 && f < features) {
        const int n = n0 + f;
        if (bias) sum += __bfloat162float(bias[n]);
        const size_t at = size_t(r) * out + n;
        if (f32_out) {
          static_cast<float*>(y)[at] = sum;
        } else {
          static_cast<__nv_bfloat16*>(y)[at] = __float2bfloat16(sum);
        }
      }
    }
  }
}

template <int ROWS>
void launch(const uint16_t* x, const uint16_t* w, const uint16_t* bias, void* y, bool f32_out, int out, int in,
            cudaStream_t stream) {
  const int per_block = kWarps * kFeaturesPerWarp;
  const unsigned blocks = unsigned((out + per_block - 1) / per_block);
  gemv_kernel<ROWS><<<blocks, kWarps * 32, 0, stream>>>(as_bf16(x), as_bf16(w), as_bf16(bias), y, f32_out, out, in);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool gemv_supports(int rows, int in_features) {
  return rows >= 1 && rows <= kGemvMaxRows && in_features > 0 && in_features % 8 == 0;
}

void gemv_bf16(const uint16_t* x, const uint16_t* w, const uint16_t* bias, void* y, bool f32_out, int rows, int out,
               int in, cudaStream_t stream) {
  QED_KERNEL_REQUIRE(gemv_supports(rows, in), "gemv: rows must be 1..4 and in_features a multiple of 8");
  QED_KERNEL_REQUIRE(out > 0, "gemv: out_features must be positive");
  switch (rows) {
    case 1:
      launch<1>(x, w, bias, y, f32_out, out, in, stream);
      break;
    case 2:
      launch<2>(x, w, bias, y, f32_out, out, in, stream);
      break;
    case 3:
      launch<3>(x, w, bias, y, f32_out, out, in, stream);
      break;
    default:
      launch<4>(x, w, bias, y, f32_out, out, in, stream);
      break;
  }
}

}  // namespace qed::cuda
