// The draft-head trainer's CUDA kernels (src/train/cuda/) against their CPU references (train/linear_grad.cpp,
// train/redrafter_loss.cpp's loops, train/adamw.cpp) on bf16-rounded inputs, so both sides read the same values.
// Tolerances:
// - GEMMs: both accumulate in fp32 in different orders; the difference is bounded by ~sqrt(K) fp32 ulps of
//   Σ_k |a_k b_k|, and 1e-5 × that sum is the allowance (a transposed operand is off by O(1) of the sum).
// - Elementwise fp32 kernels (state update, SiLU backward, epilogues): a few fp32 ulps (expf differs from the host's
//   by ≤ 2 ulps), so 1e-6 relative + 1e-7; SiLU'(x) = s (1 + x (1 − s)) cancels near x ≈ −1.28, so the backward
//   ones get 1e-6 absolute (a few ulps of the O(1) terms). bf16 outputs: one more rounding, half a bf16 ulp.
// - Cross-entropy: the loss within 1e-5 relative (fp32 block sums vs the host's double), the rank exact (random
//   logits have no ties), the bf16 gradient within half a bf16 ulp of the exact value plus 1e-6 × the weight.
// - AdamW: the same fp32 operations in the same order without FMA contraction: at most 1 ulp apart.
#include "train/cuda/train_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "backend/cuda/gemm.h"
#include "cuda_test_util.h"
#include "train/adamw.h"
#include "train/linear_grad.h"

namespace qed::testing {
namespace {

using TrainKernelTest = CudaTest;

// Σ_k |a_k b_k| over the worst output of y = x Wᵀ style products: the scale of fp32 accumulation error.
float product_magnitude(const std::vector<float>& a, const std::vector<float>& b, size_t count) {
  float sum_a = 0.0f, sum_b = 0.0f;
  for (float x : a) sum_a = std::max(sum_a, std::fabs(x));
  for (float x : b) sum_b = std::max(sum_b, std::fabs(x));
  return sum_a * sum_b * float(count);
}

// The three products of one linear on Gemm::run_product (cuBLASLt, or the fallback kernel) vs linear_grad.cpp.
void check_linear_products(cuda::Gemm& gemm, int rows, int in, int out, std::mt19937& rng) {
  const std::vector<float> x = random_bf16_values(size_t(rows) * in, rng, 1.0f);
  const std::vector<float> w = random_bf16_values(size_t(out) * in, rng, 0.1f);
  const std::vector<float> dy = random_bf16_values(size_t(rows) * out, rng, 0.5f);
  const std::vector<float> y0 = random_bf16_values(size_t(rows) * out, rng, 1.0f);
  const std::vector<float> dx0 = random_bf16_values(size_t(rows) * in, rng, 1.0f);
  const std::vector<float> dw0 = random_bf16_values(size_t(out) * in, rng, 1.0f);

  std::vector<float> want_y(y0.size()), want_dx(dx0), want_dw(dw0);
  train::linear_forward(x.data(), w.data(), nullptr, want_y.data(), size_t(rows), size_t(in), size_t(out), nullptr);
  for (size_t i = 0; i < want_y.size(); ++i) want_y[i] += y0[i];  // beta = 1
  train::linear_input_grad(dy.data(), w.data(), want_dx.data(), size_t(rows), size_t(in), size_t(out), true, nullptr);
  train::linear_weight_grad(dy.data(), x.data(), want_dw.data(), nullptr, size_t(rows), size_t(in), size_t(out),
                            nullptr);

  cuda::DeviceBuffer dx_bits = upload(to_bf16(x)), dw_bits = upload(to_bf16(w)), ddy_bits = upload(to_bf16(dy));
  cuda::DeviceBuffer y = upload(y0), dx = upload(dx0), dw = upload(dw0);
  gemm.linear_forward(dx_bits.as<uint16_t>(), dw_bits.as<uint16_t>(), y.as<float>(), rows, in, out, 1.0f, nullptr);
  gemm.linear_input_grad(ddy_bits.as<uint16_t>(), dw_bits.as<uint16_t>(), dx.as<float>(), rows, in, out, 1.0f, nullptr);
  gemm.linear_weight_grad(ddy_bits.as<uint16_t>(), dx_bits.as<uint16_t>(), dw.as<float>(), rows, in, out, nullptr);
  const std::string shape = std::to_string(rows) + "x" + std::to_string(in) + "x" + std::to_string(out);
  EXPECT_TRUE(all_close(download<float>(y, y0.size()), want_y, 0.0f, 1e-5f * product_magnitude(x, w, size_t(in)),
                        "forward " + shape));
  EXPECT_TRUE(all_close(download<float>(dx, dx0.size()), want_dx, 0.0f, 1e-5f * product_magnitude(dy, w, size_t(out)),
                        "input grad " + shape));
  EXPECT_TRUE(all_close(download<float>(dw, dw0.size()), want_dw, 0.0f, 1e-5f * product_magnitude(dy, x, size_t(rows)),
                        "weight grad " + shape));

  // beta = 0 overwrites whatever the output held.
  cuda::DeviceBuffer fresh = upload(std::vector<float>(y0.size(), NAN));
  gemm.linear_forward(dx_bits.as<uint16_t>(), dw_bits.as<uint16_t>(), fresh.as<float>(), rows, in, out, 0.0f, nullptr);
  for (size_t i = 0; i < want_y.size(); ++i) want_y[i] -= y0[i];
  EXPECT_TRUE(all_close(download<float>(fresh, y0.size()), want_y, 0.0f,
                        1e-5f * product_magnitude(x, w, size_t(in)) + 1e-5f, "forward beta 0 " + shape));
}

TEST_F(TrainKernelTest, GemmProductsMatchTheCpuLinearOpsOnCublasLtAndTheFallback) {
  std::mt19937 rng(7);
  cuda::Gemm gemm;
  for (bool fallback : {false, true}) {
    SCOPED_TRACE(fallback ? "fallback kernel" : "cuBLASLt");
    gemm.set_force_product_fallback(fallback);
    check_linear_products(gemm, 37, 64, 128, rng);    // aligned leading dimensions, odd rows
    check_linear_products(gemm, 256, 128, 384, rng);  // a head's shape at small scale
    check_linear_products(gemm, 9, 3, 11, rng);       // the PyTorch fixture's head: ld of 3 and 11 elements
  }
}

TEST_F(TrainKernelTest, CrossEntropyLossRankAndGradientMatchTheReference) {
  std::mt19937 rng(11);
  for (int vocab : {13, 1000, 152064}) {
    const int rows = 6, stride = 3, column = 1;
    const std::vector<float> logits = random_bf16_values(size_t(rows) * size_t(vocab), rng, 3.0f);
    std::vector<int32_t> targets(size_t(rows) * stride, 0);
    for (int r = 0; r < rows; ++r) targets[size_t(r) * stride + column] = int32_t(rng() % uint32_t(vocab));
    targets[2 * stride + column] = train::gpu::kIgnoreTarget;
    const float weight = 0.25f;
    cuda::DeviceBuffer d_logits = upload(logits), d_targets = upload(targets);
    cuda::DeviceBuffer d_grad = poisoned_bf16(logits.size());
    cuda::DeviceBuffer d_loss = upload(std::vector<float>(rows, NAN)), d_rank = upload(std::vector<int32_t>(rows, 7));
    train::gpu::cross_entropy_rows(d_logits.as<float>(), rows, vocab, d_targets.as<int32_t>(), stride, column, weight,
                                   d_grad.as<uint16_t>(), d_loss.as<float>(), d_rank.as<int32_t>(), nullptr);
    const std::vector<float> loss = download<float>(d_loss, rows),
                             grad = from_bf16(download<uint16_t>(d_grad, logits.size()));
    const std::vector<int32_t> rank = download<int32_t>(d_rank, rows);
    for (int r = 0; r < rows; ++r) {
      const float* l = logits.data() + size_t(r) * size_t(vocab);
      const float* g = grad.data() + size_t(r) * size_t(vocab);
      const int32_t target = targets[size_t(r) * stride + column];
      if (target == train::gpu::kIgnoreTarget) {
        EXPECT_EQ(loss[size_t(r)], 0.0f);
        EXPECT_EQ(rank[size_t(r)], -1);
        for (int j = 0; j < vocab; ++j) ASSERT_EQ(g[j], 0.0f) << "ignored row " << r << " column " << j;
        continue;
      }
      double max = l[0], sum = 0.0;
      for (int j = 0; j < vocab; ++j) max = std::max(max, double(l[j]));
      for (int j = 0; j < vocab; ++j) sum += std::exp(double(l[j]) - max);
      const double log_sum = max + std::log(sum);
      EXPECT_NEAR(loss[size_t(r)], log_sum - l[target], 1e-5 * (log_sum - l[target]) + 1e-6) << "vocab " << vocab;
      int above = 0;
      for (int j = 0; j < vocab; ++j) above += l[j] > l[target] ? 1 : 0;
      EXPECT_EQ(rank[size_t(r)], above) << "vocab " << vocab << " row " << r;
      for (int j = 0; j < vocab; ++j) {
        const double want = weight * (std::exp(double(l[j]) - log_sum) - (j == target ? 1.0 : 0.0));
        ASSERT_NEAR(g[j], want, std::fabs(want) * kBf16HalfUlp + 1e-6 * weight)
            << "vocab " << vocab << " row " << r << " column " << j;
      }
    }
  }
}

float sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}
float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

TEST_F(TrainKernelTest, RnnStateForwardAndBackwardMatchTheReferenceLoops) {
  std::mt19937 rng(3);
  const int rows = 29, h = 48;
  const size_t n = size_t(rows) * h;
  const std::vector<float> pre0 = random_bf16_values(n, rng, 2.0f), bias = random_bf16_values(size_t(h), rng, 0.5f);
  const std::vector<float> emb = random_bf16_values(n, rng, 1.0f), context = random_bf16_values(n, rng, 1.0f);
  const std::vector<float> prev = random_bf16_values(n, rng, 1.0f);
  for (bool rnn : {true, false}) {
    SCOPED_TRACE(rnn ? "rnn" : "cumulative sum");
    cuda::DeviceBuffer d_pre = upload(pre0), d_bias = upload(bias), d_emb = upload(to_bf16(emb)),
                       d_ctx = upload(context), d_prev = upload(prev);
    cuda::DeviceBuffer d_state = upload(std::vector<float>(n, NAN)), d_state_bf16 = poisoned_bf16(n);
    cuda::DeviceBuffer d_input = upload(std::vector<float>(2 * n, NAN)), d_input_bf16 = poisoned_bf16(2 * n);
    train::gpu::state_forward(rnn, d_pre.as<float>(), d_bias.as<float>(), d_prev.as<float>(), d_emb.as<uint16_t>(),
                              d_ctx.as<float>(), d_state.as<float>(), d_state_bf16.as<uint16_t>(), d_input.as<float>(),
                              d_input_bf16.as<uint16_t>(), rows, h, nullptr);
    std::vector<float> want_pre(pre0), want_state(n), want_input(2 * n);
    for (size_t i = 0; i < n; ++i) {
      const size_t r = i / size_t(h), k = i % size_t(h);
      if (rnn) {
        want_pre[i] = pre0[i] + bias[k];
        want_state[i] = want_pre[i] * sigmoid(want_pre[i]);
      } else {
        want_state[i] = prev[i] + emb[i];
      }
      want_input[r * 2 * size_t(h) + k] = context[i];
      want_input[r * 2 * size_t(h) + size_t(h) + k] = want_state[i];
    }
    EXPECT_TRUE(all_close(download<float>(d_pre, n), want_pre, 1e-6f, 1e-7f, "pre"));
    EXPECT_TRUE(all_close(download<float>(d_state, n), want_state, 1e-6f, 1e-7f, "state"));
    EXPECT_TRUE(
        all_close(from_bf16(download<uint16_t>(d_state_bf16, n)), want_state, kBf16HalfUlp, 1e-7f, "state bf16"));
    EXPECT_TRUE(all_close(download<float>(d_input, 2 * n), want_input, 1e-6f, 1e-7f, "input"));
    EXPECT_TRUE(
        all_close(from_bf16(download<uint16_t>(d_input_bf16, 2 * n)), want_input, kBf16HalfUlp, 1e-7f, "input bf16"));

    // Backward: ds = dinput[:, h:] + carry, then dpre = ds ⊙ SiLU'(pre) (rnn) or carry = ds.
    const std::vector<float> dinput = random_bf16_values(2 * n, rng, 1.0f), carry0 = random_bf16_values(n, rng, 1.0f);
    cuda::DeviceBuffer d_dinput = upload(dinput), d_carry = upload(carry0);
    cuda::DeviceBuffer d_dpre = upload(std::vector<float>(n, NAN)), d_dpre_bf16 = poisoned_bf16(n);
    train::gpu::state_backward(rnn, d_dinput.as<float>(), d_carry.as<float>(), d_pre.as<float>(), d_dpre.as<float>(),
                               d_dpre_bf16.as<uint16_t>(), rows, h, nullptr);
    std::vector<float> want_ds(n);
    for (size_t i = 0; i < n; ++i) {
      const size_t r = i / size_t(h), k = i % size_t(h);
      const float ds = dinput[r * 2 * size_t(h) + size_t(h) + k] + carry0[i];
      want_ds[i] = rnn ? ds * silu_grad(want_pre[i]) : ds;
    }
    if (rnn) {
      EXPECT_TRUE(all_close(download<float>(d_dpre, n), want_ds, 1e-6f, 1e-6f, "dpre"));
      EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_dpre_bf16, n)), want_ds, kBf16HalfUlp, 1e-6f, "dpre bf16"));
      EXPECT_TRUE(all_close(download<float>(d_carry, n), carry0, 0.0f, 0.0f, "carry untouched"));
    } else {
      EXPECT_TRUE(all_close(download<float>(d_carry, n), want_ds, 1e-6f, 1e-7f, "carry"));
    }
  }
}

TEST_F(TrainKernelTest, ResBlockEpilogueSiluBackwardAndBiasSumsMatchTheReferenceLoops) {
  std::mt19937 rng(5);
  const int rows = 70, cols = 40;  // 70 rows: uneven chunks of the column sum
  const size_t n = size_t(rows) * cols;
  const std::vector<float> pre0 = random_bf16_values(n, rng, 2.0f), bias = random_bf16_values(size_t(cols), rng, 0.5f);
  const std::vector<float> z = random_bf16_values(n, rng, 1.0f), dz = random_bf16_values(n, rng, 1.0f);
  cuda::DeviceBuffer d_pre = upload(pre0), d_bias = upload(bias), d_z = upload(z);
  cuda::DeviceBuffer d_out = upload(std::vector<float>(n, NAN)), d_out_bf16 = poisoned_bf16(n);
  train::gpu::linear_epilogue(d_pre.as<float>(), d_bias.as<float>(), d_z.as<float>(), d_out.as<float>(),
                              d_out_bf16.as<uint16_t>(), rows, cols, nullptr);
  std::vector<float> want_pre(n), want_out(n), want_dy(n);
  for (size_t i = 0; i < n; ++i) {
    want_pre[i] = pre0[i] + bias[i % size_t(cols)];
    want_out[i] = z[i] + want_pre[i] * sigmoid(want_pre[i]);
    want_dy[i] = dz[i] * silu_grad(want_pre[i]);
  }
  EXPECT_TRUE(all_close(download<float>(d_pre, n), want_pre, 1e-6f, 1e-7f, "pre"));
  EXPECT_TRUE(all_close(download<float>(d_out, n), want_out, 1e-6f, 1e-7f, "z + SiLU(pre)"));
  EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_out_bf16, n)), want_out, kBf16HalfUlp, 1e-7f, "bf16 out"));

  // The input projection's form: out = pre + bias, in place.
  cuda::DeviceBuffer d_proj = upload(pre0), d_proj_bf16 = poisoned_bf16(n);
  train::gpu::linear_epilogue(d_proj.as<float>(), d_bias.as<float>(), nullptr, d_proj.as<float>(),
                              d_proj_bf16.as<uint16_t>(), rows, cols, nullptr);
  EXPECT_TRUE(all_close(download<float>(d_proj, n), want_pre, 1e-6f, 1e-7f, "pre + bias"));

  cuda::DeviceBuffer d_dz = upload(dz), d_dy = upload(std::vector<float>(n, NAN)), d_dy_bf16 = poisoned_bf16(n);
  train::gpu::silu_backward(d_dz.as<float>(), d_pre.as<float>(), d_dy.as<float>(), d_dy_bf16.as<uint16_t>(), n,
                            nullptr);
  EXPECT_TRUE(all_close(download<float>(d_dy, n), want_dy, 1e-6f, 1e-6f, "dy"));
  EXPECT_TRUE(all_close(from_bf16(download<uint16_t>(d_dy_bf16, n)), want_dy, kBf16HalfUlp, 1e-6f, "dy bf16"));

  // db += Σ_rows dy.
  const std::vector<float> db0 = random_bf16_values(size_t(cols), rng, 1.0f);
  std::vector<float> want_db(db0);
  float magnitude = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    want_db[i % size_t(cols)] += want_dy[i];
    magnitude = std::max(magnitude, std::fabs(want_dy[i]));
  }
  cuda::DeviceBuffer d_db = upload(db0), partials(size_t(train::gpu::kColumnSumChunks) * cols * sizeof(float));
  train::gpu::column_sum_add(d_dy.as<float>(), rows, cols, partials.as<float>(), d_db.as<float>(), nullptr);
  EXPECT_TRUE(all_close(download<float>(d_db, size_t(cols)), want_db, 0.0f, 1e-5f * magnitude * float(rows), "db"));
}

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

TEST_F(TrainKernelTest, AdamWStepIsWithinOneUlpOfTheCpuOptimizerAndTheGradNormMatches) {
  std::mt19937 rng(9);
  const size_t n = 5000;
  std::vector<float> param = random_bf16_values(n, rng, 0.1f), grad = random_bf16_values(n, rng, 0.01f);
  cuda::DeviceBuffer d_param = upload(param), d_m = upload(std::vector<float>(n, 0.0f)),
                     d_v = upload(std::vector<float>(n, 0.0f)), d_grad = upload(grad);
  train::AdamWConfig config{.weight_decay = 0.01};
  train::AdamW adam(config, {n}, {true});
  for (int step = 1; step <= 3; ++step) {
    const double lr = 1e-3 * step;
    const float clip = step == 2 ? 0.5f : 1.0f;  // a clipped step: the gradient scaled before the update
    std::vector<float> clipped(grad);
    for (float& g : clipped) g *= clip;
    adam.step({std::span<float>(param)}, {std::span<const float>(clipped)}, lr);
    train::gpu::AdamWStepArgs args;
    args.grad_scale = clip;
    args.decay = float(1.0 - lr * config.weight_decay);
    args.step_size = float(lr / (1.0 - std::pow(config.beta1, double(step))));
    args.bias2_sqrt = float(std::sqrt(1.0 - std::pow(config.beta2, double(step))));
    train::gpu::adamw_step(d_param.as<float>(), d_m.as<float>(), d_v.as<float>(), d_grad.as<float>(), n, args, nullptr);
  }
  const std::vector<float> got = download<float>(d_param, n), m = download<float>(d_m, n), v = download<float>(d_v, n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_LE(std::abs(int64_t(bits_of(got[i])) - int64_t(bits_of(param[i]))), 1) << "param " << i;
    ASSERT_LE(std::abs(int64_t(bits_of(m[i])) - int64_t(bits_of(adam.first_moment(0)[i]))), 1) << "m " << i;
    ASSERT_LE(std::abs(int64_t(bits_of(v[i])) - int64_t(bits_of(adam.second_moment(0)[i]))), 1) << "v " << i;
  }

  cuda::DeviceBuffer partials(train::gpu::kSquareSumBlocks * sizeof(double));
  train::gpu::sum_squares(d_grad.as<float>(), n, partials.as<double>(), nullptr);
  double sum = 0.0, want = 0.0;
  for (double p : download<double>(partials, train::gpu::kSquareSumBlocks)) sum += p;
  for (float g : grad) want += double(g) * double(g);
  EXPECT_NEAR(sum, want, 1e-12 * want);
}

}  // namespace
}  // namespace qed::testing
