#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "train/cuda/train_kernels.h"

namespace qed::train::gpu {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint16_t to_bf16(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

__device__ __forceinline__ float from_bf16(uint16_t bits) {
  return __bfloat162float(__ushort_as_bfloat16(bits));
}

// The CPU reference's sigmoid, 1 / (1 + e^−x), with the accurate expf.
__device__ __forceinline__ float sigmoid(float x) {
  return 1.0f / (1.0f + expf(-x));
}

__device__ __forceinline__ float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

unsigned blocks_for(size_t n) {
  return unsigned((n + kThreads - 1) / kThreads);
}

__global__ void gather_embeddings_kernel(const uint16_t* table, const int32_t* tokens, int stride, int column,
                                         uint16_t* out, int rows, int hidden) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * size_t(hidden)) return;
  const size_t row = i / size_t(hidden), k = i % size_t(hidden);
  const size_t token = size_t(tokens[row * size_t(stride) + size_t(column)]);
  out[i] = table[token * size_t(hidden) + k];
}

__global__ void state_forward_kernel(bool rnn, float* pre, const float* bias, const float* prev,
                                     const uint16_t* embedding, const float* context, float* state,
                                     uint16_t* state_bf16, float* input, uint16_t* input_bf16, int rows, int hidden) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * size_t(hidden)) return;
  const size_t row = i / size_t(hidden), k = i % size_t(hidden);
  float s;
  if (rnn) {
    const float p = pre[i] + bias[k];
    pre[i] = p;
    s = p * sigmoid(p);
  } else {
    s = (prev ? prev[i] : 0.0f) + from_bf16(embedding[i]);
  }
  state[i] = s;
  const uint16_t s_bf16 = to_bf16(s);
  state_bf16[i] = s_bf16;
  const size_t at = row * 2 * size_t(hidden);
  const float c = context[i];
  input[at + k] = c;
  input_bf16[at + k] = to_bf16(c);
  input[at + size_t(hidden) + k] = s;
  input_bf16[at + size_t(hidden) + k] = s_bf16;
}

__global__ void linear_epilogue_kernel(float* pre, const float* bias, const float* residual_in, float* out,
                                       uint16_t* out_bf16, int rows, int cols) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * size_t(cols)) return;
  const float p = pre[i] + bias[i % size_t(cols)];
  float y;
  if (residual_in) {
    pre[i] = p;
    y = residual_in[i] + p * sigmoid(p);
  } else {
    y = p;
  }
  out[i] = y;
  out_bf16[i] = to_bf16(y);
}

// Block-wide reductions over kCeThreads threads; `scratch` holds one value per warp.
constexpr int kCeThreads = 512;

template <typename T, typename Op>
__device__ T block_reduce(T value, T* scratch, Op op) {
  for (int offset = 16; offset > 0; offset /= 2) value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  __syncthreads();  // scratch may still be read by the previous reduction
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = scratch[0];
  for (int w = 1; w < kCeThreads / 32; ++w) value = op(value, scratch[w]);
  return value;
}

__global__ void __launch_bounds__(kCeThreads)
    cross_entropy_kernel(const float* logits, int vocab, const int32_t* targets, int stride, int column, float weight,
                         uint16_t* dlogits, float* loss, int32_t* rank) {
  __shared__ float float_scratch[kCeThreads / 32];
  __shared__ int int_scratch[kCeThreads / 32];
  const size_t row = blockIdx.x;
  const float* l = logits + row * size_t(vocab);
  uint16_t* d = dlogits + row * size_t(vocab);
  const int32_t target = targets[row * size_t(stride) + size_t(column)];
  if (target == kIgnoreTarget) {
    for (int j = int(threadIdx.x); j < vocab; j += kCeThreads) d[j] = 0;
    if (threadIdx.x == 0) {
      loss[row] = 0.0f;
      rank[row] = -1;
    }
    return;
  }
  const float target_logit = l[target];
  float max = -INFINITY;
  int above = 0;
  for (int j = int(threadIdx.x); j < vocab; j += kCeThreads) {
    const float x = l[j];
    max = fmaxf(max, x);
    above += x > target_logit ? 1 : 0;
  }
  max = block_reduce(max, float_scratch, [](float a, float b) { return fmaxf(a, b); });
  above = block_reduce(above, int_scratch, [](int a, int b) { return a + b; });
  float sum = 0.0f;
  for (int j = int(threadIdx.x); j < vocab; j += kCeThreads) sum += expf(l[j] - max);
  sum = block_reduce(sum, float_scratch, [](float a, float b) { return a + b; });
  const float log_sum = max + logf(sum);
  for (int j = int(threadIdx.x); j < vocab; j += kCeThreads) {
    float g = expf(l[j] - log_sum) * weight;
    if (j == target) g -= weight;
    d[j] = to_bf16(g);
  }
  if (threadIdx.x == 0) {
    loss[row] = log_sum - target_logit;
    rank[row] = above;
  }
}

__global__ void silu_backward_kernel(const float* dz, const float* pre, float* dy, uint16_t* dy_bf16, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = dz[i] * silu_grad(pre[i]);
  dy[i] = g;
  dy_bf16[i] = to_bf16(g);
}

__global__ void state_backward_kernel(bool rnn, const float* dinput, float* carry, const float* pre, float* dpre,
                                      uint16_t* dpre_bf16, int rows, int hidden) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * size_t(hidden)) return;
  const size_t row = i / size_t(hidden), k = i % size_t(hidden);
  const float ds = dinput[row * 2 * size_t(hidden) + size_t(hidden) + k] + carry[i];
  if (rnn) {
    const float g = ds * silu_grad(pre[i]);
    dpre[i] = g;
    dpre_bf16[i] = to_bf16(g);
  } else {
    carry[i] = ds;
  }
}

// Stage 1: partials[chunk][c] = Σ over the chunk's rows, in row order.
__global__ void column_sum_partial_kernel(const float* x, int rows, int cols, float* partials) {
  const int c = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (c >= cols) return;
  const int chunk = int(blockIdx.y);
  const int per_chunk = (rows + kColumnSumChunks - 1) / kColumnSumChunks;
  const int begin = chunk * per_chunk, end = min(rows, begin + per_chunk);
  float sum = 0.0f;
  for (int r = begin; r < end; ++r) sum += x[size_t(r) * size_t(cols) + size_t(c)];
  partials[size_t(chunk) * size_t(cols) + size_t(c)] = sum;
}

// Stage 2: out[c] += Σ_chunk partials, in chunk order.
__global__ void column_sum_finish_kernel(const float* partials, int cols, float* out) {
  const int c = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (c >= cols) return;
  float sum = 0.0f;
  for (int chunk = 0; chunk < kColumnSumChunks; ++chunk) sum += partials[size_t(chunk) * size_t(cols) + size_t(c)];
  out[c] += sum;
}

__global__ void f32_to_bf16_kernel(const float* x, uint16_t* out, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = to_bf16(x[i]);
}

__global__ void sum_squares_kernel(const float* x, size_t n, double* partials) {
  __shared__ double scratch[kThreads];
  double sum = 0.0;
  for (size_t i = size_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += size_t(gridDim.x) * kThreads) {
    const double v = double(x[i]);
    sum += v * v;
  }
  scratch[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) scratch[threadIdx.x] += scratch[threadIdx.x + unsigned(half)];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = scratch[0];
}

__global__ void adamw_kernel(float* param, float* m, float* v, const float* grad, size_t n, AdamWStepArgs a) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = __fmul_rn(grad[i], a.grad_scale);
  float p = __fmul_rn(param[i], a.decay);
  const float mi = __fadd_rn(__fmul_rn(a.beta1, m[i]), __fmul_rn(1.0f - a.beta1, g));
  const float vi = __fadd_rn(__fmul_rn(a.beta2, v[i]), __fmul_rn(__fmul_rn(1.0f - a.beta2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bias2_sqrt), a.eps);
  p = __fsub_rn(p, __fdiv_rn(__fmul_rn(a.step_size, mi), denom));
  m[i] = mi;
  v[i] = vi;
  param[i] = p;
}

}  // namespace

void gather_embeddings_bf16(const uint16_t* table, const int32_t* tokens, int stride, int column, uint16_t* out,
                            int rows, int hidden, cudaStream_t stream) {
  const size_t n = size_t(rows) * size_t(hidden);
  if (n == 0) return;
  gather_embeddings_kernel<<<blocks_for(n), kThreads, 0, stream>>>(table, tokens, stride, column, out, rows, hidden);
  QED_CUDA_CHECK_LAUNCH();
}

void state_forward(bool rnn, float* pre, const float* bias, const float* prev, const uint16_t* embedding,
                   const float* context, float* state, uint16_t* state_bf16, float* input, uint16_t* input_bf16,
                   int rows, int hidden, cudaStream_t stream) {
  const size_t n = size_t(rows) * size_t(hidden);
  if (n == 0) return;
  state_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(rnn, pre, bias, prev, embedding, context, state,
                                                               state_bf16, input, input_bf16, rows, hidden);
  QED_CUDA_CHECK_LAUNCH();
}

void linear_epilogue(float* pre, const float* bias, const float* residual_in, float* out, uint16_t* out_bf16, int rows,
                     int cols, cudaStream_t stream) {
  const size_t n = size_t(rows) * size_t(cols);
  if (n == 0) return;
  linear_epilogue_kernel<<<blocks_for(n), kThreads, 0, stream>>>(pre, bias, residual_in, out, out_bf16, rows, cols);
  QED_CUDA_CHECK_LAUNCH();
}

void cross_entropy_rows(const float* logits, int rows, int vocab, const int32_t* targets, int stride, int column,
                        float weight, uint16_t* dlogits, float* loss, int32_t* rank, cudaStream_t stream) {
  QED_KERNEL_REQUIRE(vocab > 0, "cross_entropy_rows: vocab must be positive");
  if (rows == 0) return;
  cross_entropy_kernel<<<unsigned(rows), kCeThreads, 0, stream>>>(logits, vocab, targets, stride, column, weight,
                                                                  dlogits, loss, rank);
  QED_CUDA_CHECK_LAUNCH();
}

void silu_backward(const float* dz, const float* pre, float* dy, uint16_t* dy_bf16, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  silu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dz, pre, dy, dy_bf16, n);
  QED_CUDA_CHECK_LAUNCH();
}

void state_backward(bool rnn, const float* dinput, float* carry, const float* pre, float* dpre, uint16_t* dpre_bf16,
                    int rows, int hidden, cudaStream_t stream) {
  const size_t n = size_t(rows) * size_t(hidden);
  if (n == 0) return;
  state_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(rnn, dinput, carry, pre, dpre, dpre_bf16, rows, hidden);
  QED_CUDA_CHECK_LAUNCH();
}

void column_sum_add(const float* x, int rows, int cols, float* partials, float* out, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const dim3 grid(blocks_for(size_t(cols)), kColumnSumChunks);
  column_sum_partial_kernel<<<grid, kThreads, 0, stream>>>(x, rows, cols, partials);
  QED_CUDA_CHECK_LAUNCH();
  column_sum_finish_kernel<<<blocks_for(size_t(cols)), kThreads, 0, stream>>>(partials, cols, out);
  QED_CUDA_CHECK_LAUNCH();
}

void f32_to_bf16(const float* x, uint16_t* out, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  f32_to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, out, n);
  QED_CUDA_CHECK_LAUNCH();
}

void sum_squares(const float* x, size_t n, double* partials, cudaStream_t stream) {
  sum_squares_kernel<<<kSquareSumBlocks, kThreads, 0, stream>>>(x, n, partials);
  QED_CUDA_CHECK_LAUNCH();
}

void adamw_step(float* param, float* m, float* v, const float* grad, size_t n, const AdamWStepArgs& args,
                cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n), kThreads, 0, stream>>>(param, m, v, grad, n, args);
  QED_CUDA_CHECK_LAUNCH();
}

}  // namespace qed::train::gpu
