#pragma once
// Reference ops of the quantized formats (FP8 E4M3 with float32 scales, int8 weight-only), plain loops in fp32.
// They define what a quantized checkpoint means: the CPU backend runs them, and the CUDA kernels (cuBLASLt FP8 GEMM,
// the int8 dequant-GEMM, the FP8 KV cache) are tested against exactly these functions.
//
// Conventions (vLLM's and ModelOpt's): a scale is the dequantisation factor, value ≈ q * scale, so
// q = saturate(value / scale). FP8 scales are amax / 448 (448 = largest finite E4M3fn), int8 scales amax / 127
// (symmetric, -128 unused).
#include <cstddef>
#include <cstdint>

namespace qed::cpu {

inline constexpr float kFp8E4M3Max = 448.0f;
inline constexpr float kInt8Max = 127.0f;

// max |x| over n floats; NaN if any element is NaN (a NaN activation must not silently vanish from a calibration).
float amax(const float* x, size_t n);

// The scale that maps amax onto the format's largest value. amax == 0 (an all-zero tensor) gives 1, so that
// dividing by the scale stays finite and zeros stay zeros.
float fp8_scale_for_amax(float amax);
float int8_scale_for_amax(float amax);

// E4M3 code of value / scale: round to nearest even, |result| saturated at 448 (also for ±inf), NaN stays NaN (0x7F).
uint8_t quantize_fp8(float value, float scale);
// Per tensor: out[i] = quantize_fp8(x[i], scale).
void quantize_fp8_per_tensor(const float* x, size_t n, float scale, uint8_t* out);
// Per output channel of a rows × cols weight: row r uses scales[r].
void quantize_fp8_per_channel(const float* w, int rows, int cols, const float* scales, uint8_t* out);
void dequantize_fp8_per_tensor(const uint8_t* q, size_t n, float scale, float* out);
void dequantize_fp8_per_channel(const uint8_t* q, int rows, int cols, const float* scales, float* out);
// quantize then dequantize: the values an FP8 GEMM (or an FP8 KV cache) actually computes with. In place allowed.
void fake_quantize_fp8(const float* x, size_t n, float scale, float* out);

// Dynamic per-token-group activations of block-wise FP8 (vLLM's per_token_group_quant_fp8, transformers'
// act_quant): every run of `group` consecutive floats (one token's block_in columns; n a multiple of group) gets
// s = max(amax, kFp8GroupEps) / 448 and becomes fake_quantize_fp8(x, group, s). The eps is vLLM's; transformers
// has none (an all-zero group gives 0/0 = NaN there, which its FP8Linear turns into 0 outputs). Returns false
// when a group holds a NaN (its outputs are NaN then), so the caller can refuse it as the per-tensor path does.
inline constexpr float kFp8GroupEps = 1e-10f;
bool fake_quantize_fp8_per_group(const float* x, size_t n, size_t group, float* out);

// int8 code of value / scale: round half to even (torch.round), clamped to [-127, 127]; NaN gives 0.
int8_t quantize_int8(float value, float scale);
// Symmetric per-output-channel: scales[r] = int8_scale_for_amax(amax of row r), then q = quantize_int8(w, scales[r]).
void quantize_int8_per_channel(const float* w, int rows, int cols, float* scales, int8_t* out);
void dequantize_int8_per_channel(const int8_t* q, int rows, int cols, const float* scales, float* out);

// FP8 GEMM (x_q · W_q^T) · s_x · s_w (+ bias), what cuBLASLt computes with per-tensor A/B scales and an fp32
// accumulator: x_q is rows × in E4M3, w_q out_dim × in E4M3 (nn.Linear layout), w_scales holds one scale
// (per_channel false) or out_dim scales; bias may be null. Products of two E4M3 values are exact in fp32, so only
// the summation order separates this from a GPU result.
void fp8_gemm(const uint8_t* x_q, float x_scale, const uint8_t* w_q, const float* w_scales, bool per_channel,
              const float* bias, float* out, int rows, int in, int out_dim);

// int8 weight-only GEMM: out[r][j] = (sum_k x[r][k] * w_q[j][k]) * w_scales[j] (+ bias[j]); activations stay
// fp32 (bf16 on the GPU), the scale is applied after the dot product as a fused dequant-GEMM does.
void int8_wo_gemm(const float* x, const int8_t* w_q, const float* w_scales, const float* bias, float* out, int rows,
                  int in, int out_dim);

}  // namespace qed::cpu
