#include "backend/cuda/quant_linear.h"

#include <algorithm>

#include "backend/cuda/decode_gemm_plan.h"
#include "backend/cuda/decode_gemv.h"
#include "backend/cuda/gemv_kernels.h"
#include "backend/cuda/quant_kernels.h"
#include "core/error.h"

namespace qed::cuda {
namespace {

// Rows per fp32-scratch GEMM: large enough that a chunk still fills an H200 (1024 × 5120 × 27648 is ~290 GFLOP),
// small enough that the 14B shape's widest layer needs 113 MB of scratch instead of 0.9 GB at 8192 rows.
constexpr int kChunkRows = 1024;

std::vector<const CudaLinear*> all_linears(const CudaModelWeights& weights) {
  std::vector<const CudaLinear*> out;
  for (const CudaLayerWeights& l : weights.layers) {
    for (const CudaLinear* linear : {&l.qkv, &l.o_proj, &l.gate_up, &l.down_proj}) out.push_back(linear);
  }
  return out;
}

}  // namespace

LinearRunner::LinearRunner(Gemm& gemm, const CudaModelWeights& weights, int max_rows)
    : LinearRunner(gemm, all_linears(weights), max_rows) {}

LinearRunner::LinearRunner(Gemm& gemm, const std::vector<const CudaLinear*>& linears, int max_rows)
    : gemm_(gemm), max_rows_(max_rows) {
  if (max_rows <= 0) fail("linear: max_rows must be positive, got {}", max_rows);
  size_t widest_fp8_in = 0, widest_acc_out = 0, largest_int8 = 0;
  for (const CudaLinear* linear : linears) {
    if (linear->format == LinearFormat::Fp8) widest_fp8_in = std::max(widest_fp8_in, size_t(linear->in));
    if ((linear->format == LinearFormat::Fp8 && linear->per_channel) ||
        linear->format == LinearFormat::Int8WeightOnly) {
      widest_acc_out = std::max(widest_acc_out, size_t(linear->out));
    }
    if (linear->format == LinearFormat::Int8WeightOnly) {
      largest_int8 = std::max(largest_int8, size_t(linear->out) * size_t(linear->in));
    }
  }
  chunk_rows_ = std::min(max_rows_, kChunkRows);
  if (widest_fp8_in > 0) {
    x_q_ = DeviceBuffer(size_t(max_rows_) * widest_fp8_in);
    silu_fp8_ = DeviceBuffer(size_t(std::min(max_rows_, kDecodeGemvMaxRows)) * widest_fp8_in);
    scale_ = DeviceBuffer(sizeof(float));
  }
  if (widest_acc_out > 0) acc_ = DeviceBuffer(size_t(chunk_rows_) * widest_acc_out * sizeof(float));
  // Only batches above the GEMV's rows dequantize, and the engine never sends one when max_rows is that small.
  if (largest_int8 > 0 && max_rows_ > kSkinnyInt8Rows) dequant_ = DeviceBuffer(largest_int8 * sizeof(uint16_t));
}

const float* LinearRunner::static_fp8_scale(const CudaLinear& linear) {
  return linear.format == LinearFormat::Fp8 && linear.input_scale.bytes() ? linear.input_scale.as<float>() : nullptr;
}

DecodeGemmOperands LinearRunner::decode_operands(const CudaLinear& linear, const void* x, const float* x_scale,
                                                 uint16_t* y, int rows) const {
  DecodeGemmOperands o;
  o.x = x;
  o.w = linear.weight.data();
  o.bias = linear.bias.bytes() ? linear.bias.as<uint16_t>() : nullptr;
  o.y = y;
  o.rows = rows;
  o.out = linear.out;
  o.in = linear.in;
  switch (linear.format) {
    case LinearFormat::Bf16:
      o.type = SkinnyWeight::Bf16;
      break;
    case LinearFormat::Fp8:
      o.type = SkinnyWeight::Fp8E4m3;
      o.x_scale = x_scale;
      o.w_scales = linear.weight_scale.as<float>();
      o.per_channel = linear.per_channel;
      break;
    case LinearFormat::Int8WeightOnly:
      o.type = SkinnyWeight::Int8;
      o.w_scales = linear.weight_scale.as<float>();
      break;
  }
  return o;
}

bool LinearRunner::run_gate_up_silu(const CudaLinear& gate_up, const uint16_t* x, uint16_t* act, int rows,
                                    cudaStream_t stream, const uint8_t* ready_fp8, const float* act_fp8_scale) {
  if (rows <= 0 || rows > std::min(max_rows_, kDecodeGemvMaxRows)) return false;
  if (ready_fp8 && !static_fp8_scale(gate_up)) fail("linear: a pre-quantized input needs a static FP8 input scale");
  const bool fp8 = gate_up.format == LinearFormat::Fp8;
  const float* x_scale = fp8 && gate_up.input_scale.bytes() ? gate_up.input_scale.as<float>() : scale_.as<float>();
  const void* x_in = fp8 ? static_cast<const void*>(ready_fp8 ? ready_fp8 : x_q_.as<uint8_t>()) : x;
  const DecodeGemmOperands o = decode_operands(gate_up, x_in, fp8 ? x_scale : nullptr, act, rows);
  if (!gemm_.run_decode_silu_supported(o)) return false;
  if (act_fp8_scale && !silu_fp8_.bytes()) fail("linear: an E4M3 SiLU output without an FP8 layer to size it");
  if (fp8 && !ready_fp8) {
    if (!gate_up.input_scale.bytes()) dynamic_fp8_scale_bf16(x, size_t(rows) * gate_up.in, scale_.as<float>(), stream);
    quantize_fp8_bf16(x, size_t(rows) * gate_up.in, x_scale, x_q_.as<uint8_t>(), stream);
  }
  gemm_.run_decode_silu(o, act_fp8_scale ? silu_fp8_.as<uint8_t>() : nullptr, act_fp8_scale, stream);
  return true;
}

void LinearRunner::run(const CudaLinear& linear, const uint16_t* x, uint16_t* y, int rows, cudaStream_t stream,
                       const uint8_t* ready_fp8) {
  if (rows <= 0) return;
  if (rows > max_rows_) fail("linear: {} rows, the scratch holds {}", rows, max_rows_);
  const uint16_t* bias = linear.bias.bytes() ? linear.bias.as<uint16_t>() : nullptr;
  if (ready_fp8 && linear.format != LinearFormat::Fp8) fail("linear: a pre-quantized input for a non-FP8 layer");
  const size_t in = size_t(linear.in), out = size_t(linear.out);
  switch (linear.format) {
    case LinearFormat::Bf16: {
      const GemmWeight w{linear.weight.data(), GemmType::BF16, linear.out, linear.in, nullptr};
      gemm_.run(x, GemmType::BF16, w, bias, y, GemmType::BF16, rows, stream);
      return;
    }
    case LinearFormat::Fp8: {
      const float* x_scale = linear.input_scale.bytes() ? linear.input_scale.as<float>() : scale_.as<float>();
      const uint8_t* x_q = ready_fp8 ? ready_fp8 : x_q_.as<uint8_t>();
      if (ready_fp8) {
        if (!static_fp8_scale(linear)) fail("linear: a pre-quantized input needs a static FP8 input scale");
      } else {
        if (!linear.input_scale.bytes()) dynamic_fp8_scale_bf16(x, size_t(rows) * in, scale_.as<float>(), stream);
        quantize_fp8_bf16(x, size_t(rows) * in, x_scale, x_q_.as<uint8_t>(), stream);
      }
      // Decode: one pass over the E4M3 weight with either scale kind applied in the kernel's epilogue, where the
      // plan names a kernel for it.
      if (gemm_.run_decode(decode_operands(linear, x_q, x_scale, y, rows), stream)) return;
      if (!linear.per_channel) {
        const GemmWeight w{linear.weight.data(), GemmType::F8_E4M3, linear.out, linear.in,
                           linear.weight_scale.as<float>()};
        gemm_.run(x_q, GemmType::F8_E4M3, w, bias, y, GemmType::BF16, rows, stream, x_scale);
        return;
      }
      const GemmWeight w{linear.weight.data(), GemmType::F8_E4M3, linear.out, linear.in, nullptr};
      for (int begin = 0; begin < rows; begin += chunk_rows_) {
        const int n = std::min(chunk_rows_, rows - begin);
        gemm_.run(x_q + size_t(begin) * in, GemmType::F8_E4M3, w, nullptr, acc_.data(), GemmType::F32, n, stream);
        scale_rows_to_bf16(acc_.as<float>(), x_scale, linear.weight_scale.as<float>(), bias, y + size_t(begin) * out, n,
                           linear.out, stream);
      }
      return;
    }
    case LinearFormat::Int8WeightOnly: {
      const int8_t* q = linear.weight.as<int8_t>();
      // Every decode row count runs a fused kernel (Gemm::run_decode: the plan's, else the skinny kernel, which
      // refuses a bad shape or pointer with a one-line error): the dequantization scratch only exists for larger
      // batches.
      if (rows <= kSkinnyInt8Rows) {
        gemm_.run_decode(decode_operands(linear, x, nullptr, y, rows), stream);
        return;
      }
      int8_to_bf16(q, out * in, dequant_.as<uint16_t>(), stream);
      const GemmWeight w{dequant_.data(), GemmType::BF16, linear.out, linear.in, nullptr};
      for (int begin = 0; begin < rows; begin += chunk_rows_) {
        const int n = std::min(chunk_rows_, rows - begin);
        gemm_.run(x + size_t(begin) * in, GemmType::BF16, w, nullptr, acc_.data(), GemmType::F32, n, stream);
        scale_rows_to_bf16(acc_.as<float>(), nullptr, linear.weight_scale.as<float>(), bias, y + size_t(begin) * out, n,
                           linear.out, stream);
      }
      return;
    }
  }
}

}  // namespace qed::cuda
