#pragma once
// One Qwen2/Llama decoder layer in fp32 on the CPU, in pieces: its linear weights (dequantized once), the attention
// and MLP sublayers, and the batch bookkeeping around them. CpuBackend runs them for the whole model;
// tp::TpSimulatedCpuBackend runs the same pieces over each rank's shard and sums the partials, so both compute with
// one implementation of the reference math.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "core/thread_pool.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace qed {

// The activations a quantizer calibrates on, seen during CpuBackend::forward (qed quantize's amax recorder).
// Unset (the default) the forward pays one null check per layer.
enum class LinearInput { Qkv, O, GateUp, Down };  // q/k/v share an input, and so do gate/up

class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  // x: count floats of the input of the linear layers at `site` of `layer`, before any activation quantization.
  virtual void linear_input(int layer, LinearInput site, const float* x, size_t count) = 0;
  // The K (after RoPE) and V values of the new tokens as they go into the KV cache, before FP8 KV quantization.
  virtual void kv_written(int layer, const float* k, const float* v, size_t count) = 0;
};

namespace cpu {

// How a linear layer's input is quantized in a FP8 checkpoint: not at all, with the calibrated static scale, with
// a per-tensor scale from the input's own amax (vLLM's dynamic per-tensor scheme), or, block-wise FP8, with one
// dynamic scale per token and group of `group` columns (vLLM's per_token_group_quant_fp8).
struct InputQuant {
  ActivationScheme scheme = ActivationScheme::None;
  float scale = 0.0f;  // static only
  int group = 0;       // dynamic per token group when > 0
};

// The linear layers of one decoder layer (the whole model's or one tensor-parallel rank's shard), fp32.
struct DenseLayer {
  std::vector<float> q_proj, k_proj, v_proj, o_proj;
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty when absent
  std::vector<float> gate_up_proj;                    // [2 * intermediate, hidden]: gate rows, then up rows
  std::vector<float> gate_up_bias, down_bias;
  std::vector<float> down_proj;
  InputQuant q_input, k_input, v_input, o_input, gate_up_input, down_input;
  float k_cache_scale = 0.0f, v_cache_scale = 0.0f;  // > 0: the KV cache holds FP8 values with these scales
};

// Quantized weights are dequantized here (W = W_q * weight_scale, exact in fp32); activations and the KV cache are
// quantized in the forward, so every number the CPU computes with is one the quantized format holds. `where` names
// the checkpoint in errors.
DenseLayer load_dense_layer(const LayerWeights& w, const ModelConfig& config, const std::string& where, int layer);

// The values linear layer input x (n floats) is multiplied with: x itself, or its FP8 quantize-dequantize in
// `scratch` (the same numbers an FP8 GEMM reads, its scale folded back in).
const float* quantized_input(const InputQuant& quant, const float* x, size_t n, std::vector<float>& scratch);

// All sequences' new tokens as one row-major activation matrix: seq_begin[s] is sequence s's first row.
struct FlatBatch {
  std::vector<int32_t> ids, positions;
  std::vector<size_t> seq_begin;
  int rows() const { return static_cast<int>(ids.size()); }
};
FlatBatch flatten(const ForwardBatch& batch);

// The heads a layer computes: the model's, or one rank's share.
struct HeadCounts {
  int heads = 0, kv_heads = 0, head_dim = 0;
};

// Reused buffers of the sublayers (sized on use).
struct SublayerScratch {
  std::vector<float> q, k, v, attn, gate_up, act, quantized;
};

// out (rows × hidden) = o_proj(attention over the paged cache) of the normalized input; the new tokens' K/V are
// written to `cache` first. observer/layer: calibration hooks (null: none).
void attention_sublayer(const DenseLayer& w, HeadCounts h, const ForwardBatch& batch, const FlatBatch& flat,
                        const float* normed, int hidden, const float* inv_freq, const PagedKv& cache,
                        SublayerScratch& s, float* out, ThreadPool* pool, ForwardObserver* observer, int layer);

// out (rows × hidden) = down(silu(gate) * up) of the normalized input, `inter` the layer's (or rank's) width.
void mlp_sublayer(const DenseLayer& w, int inter, const float* normed, int rows, int hidden, SublayerScratch& s,
                  float* out, ThreadPool* pool, ForwardObserver* observer, int layer);

// The hidden rows whose logits the batch wants (each sequence's last, or its logits_indices), in batch order.
std::vector<float> wanted_rows(const ForwardBatch& batch, const FlatBatch& flat, const float* residual, int hidden);

// Copies whole blocks of one layer's K and V (block_floats each) from src to dst.
void copy_kv_blocks(const PagedKv& cache, size_t block_floats, std::span<const std::pair<int32_t, int32_t>> src_dst);

}  // namespace cpu
}  // namespace qed
