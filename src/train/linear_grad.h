#pragma once
// The three products of a linear layer y = x Wᵀ + b over a batch of rows, in fp32, for the draft-head trainer:
// forward, the input gradient and the weight/bias gradient. W is [out, in] (nn.Linear). Each output element is
// summed by one thread in a fixed order, so results do not depend on the thread count (a resumed run must match an
// uninterrupted one bit for bit). Rows are processed in blocks so a weight row is read once per block, not per row.
#include <cstddef>

namespace qed {
class ThreadPool;
}

namespace qed::train {

// y[r][o] = Σ_i x[r][i] w[o][i] (+ b[o]); b may be null. x: rows × in, y: rows × out.
void linear_forward(const float* x, const float* w, const float* b, float* y, size_t rows, size_t in, size_t out,
                    ThreadPool* pool);

// dx[r][i] (+)= Σ_o dy[r][o] w[o][i]: overwritten unless `accumulate`.
void linear_input_grad(const float* dy, const float* w, float* dx, size_t rows, size_t in, size_t out, bool accumulate,
                       ThreadPool* pool);

// dw[o][i] += Σ_r dy[r][o] x[r][i] and db[o] += Σ_r dy[r][o] (db may be null).
void linear_weight_grad(const float* dy, const float* x, float* dw, float* db, size_t rows, size_t in, size_t out,
                        ThreadPool* pool);

}  // namespace qed::train
