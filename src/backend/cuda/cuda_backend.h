#pragma once
// The CUDA backend: a Qwen2/Llama forward in bf16 (fp32 accumulation and fp32 softmax/norm statistics), weights
// uploaded once, a paged bf16 KV cache sized from free device memory, cuBLASLt for every GEMM. Per step: the batch
// metadata is packed into one pinned buffer and sent with one async copy; every buffer is allocated at construction
// (no cudaMalloc per step); the logits of the requested rows come back as fp32. CpuBackend is its reference.
#include <cuda_runtime.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/cuda_weights.h"
#include "backend/cuda/device.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/quant_linear.h"
#include "backend/cuda/step_inputs.h"
#include "backend/cuda/step_timer.h"
#include "model/model_config.h"

namespace qed {
namespace cuda {
class ActivationAmax;  // activation_amax.h: qed quantize's recorder
}  // namespace cuda

// The KV cache's element type (vLLM's --kv-cache-dtype): auto = FP8 E4M3 when the checkpoint has k/v scales
// (qed quantize --kv-cache fp8), else bf16; fp8 without scales uses scale 1.0 (as vLLM).
enum class KvCacheDtype : uint8_t { Auto, Bf16, Fp8 };
// "auto" | "bf16" | "fp8"; throws naming the flag otherwise.
KvCacheDtype parse_kv_cache_dtype(const std::string& name);

struct CudaBackendOptions {
  int device = 0;
  int block_size = 16;                // tokens per KV block
  int num_blocks = 0;                 // 0 = as many as gpu_memory_fraction leaves room for
  float gpu_memory_fraction = 0.90f;  // of the device's total memory, for weights + buffers + KV cache (as vLLM)
  int max_batched_tokens = 8192;      // rows of one forward (the scheduler's max_num_batched_tokens)
  int max_logits_rows = 256;          // logits rows per lm_head pass; more rows run in several passes
  // Causal chunks of at least this many new rows take the tensor-core prefill attention (head_dim 64/128); decode
  // rows, shorter chunks and tree-masked chunks the flash-decoding kernel. 0: the flash-decoding kernel only.
  int prefill_attention_min_rows = 32;
  // Decode steps (one token per sequence, causal) of up to max_graph_batch sequences replay a CUDA graph captured
  // per padded batch size (1, 2, 4, ...). Off by default until measured on hardware (docs/cuda.md).
  bool cuda_graphs = false;
  int max_graph_batch = 64;
  // With cuda_graphs: steps whose every sequence brings at most cuda::kMaxGraphVerifyRows new tokens (speculative
  // verify steps: the last token and its draft chain or tree) replay a graph per (padded batch, rows per sequence,
  // context bucket) too. QED_CUDA_VERIFY_GRAPHS=0 in the environment turns this off (A/B runs).
  bool verify_graphs = true;
  // Tests: false launches graph-layout steps eagerly and captures nothing, the reference a replay must equal bit for
  // bit.
  bool replay_graphs = true;
  // Tensor parallelism (src/backend/tp_cuda; both unset for a whole model on one device, every other caller): this
  // backend is one rank over its shard. row_parallel_reduce is called on the o_proj and down_proj outputs (count bf16
  // values on the backend's stream) to sum the ranks' partials; lm_head_rows is the rank's vocab-parallel lm_head
  // slice, the logits columns it computes (0 = vocab_size). Decode graphs must be off.
  std::function<void(uint16_t* x, size_t count, cudaStream_t stream)> row_parallel_reduce;
  int lm_head_rows = 0;
  KvCacheDtype kv_cache_dtype = KvCacheDtype::Auto;
  // How the tensor-core decode attention streams K/V at head_dim 64/128 (attention_kernels.h), for A/B runs.
  cuda::DecodeKernel decode_kernel = cuda::DecodeKernel::TensorCores;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const ModelConfig& config, cuda::CudaModelWeights weights, const CudaBackendOptions& options);
  ~CudaBackend() override;
  // config.json + safetensors of a model directory.
  static std::unique_ptr<CudaBackend> load(const std::string& model_dir, const CudaBackendOptions& options);
  // A model of `config`'s shape with random weights generated on the device (benchmarks), bf16 or quantized.
  static std::unique_ptr<CudaBackend> random(const ModelConfig& config, uint64_t seed,
                                             const CudaBackendOptions& options,
                                             cuda::RandomWeightsDtype dtype = cuda::RandomWeightsDtype::Bf16);

  std::string name() const override { return "cuda"; }
  const ModelConfig& config() const override { return config_; }
  KvCacheLayout kv_layout() const override { return layout_; }
  std::string kv_cache_dtype() const override { return kv_fp8_ ? "fp8" : "bf16"; }
  void forward(const ForwardBatch& batch, ForwardResult& result) override;
  // The GPU sampler covers temperature/top-k/top-p/min-p and logprobs up to 20; repetition penalty needs the
  // sequence's history and stays on the host.
  bool can_sample_on_device(const SamplingParams& params) const override;
  void copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) override;
  // Calibration (qed quantize): while set (not owned; null to stop), every forward folds its activation amax into
  // `recorder` and runs without decode graphs (padding rows would be counted). Unset, run_layers pays a null check.
  void set_amax_recorder(cuda::ActivationAmax* recorder) { amax_ = recorder; }

  size_t weight_bytes() const { return weights_.bytes; }
  size_t kv_cache_bytes() const { return 2 * kv_layer_elems_ * size_t(config_.num_layers) * kv_element_bytes(); }
  bool kv_cache_fp8() const { return kv_fp8_; }

  // Steps that ran in a CUDA-graph layout, and how many of them replayed a captured graph (the others launched
  // eagerly: the first of their key, or replay_graphs off).
  struct GraphCounts {
    int64_t decode_steps = 0;
    int64_t verify_steps = 0;
    int64_t replays = 0;
  };
  const GraphCounts& graph_counts() const { return graph_counts_; }

 private:
  struct PinnedBuffer {
    void* data = nullptr;
    size_t bytes = 0;
    void reserve(size_t wanted);
    ~PinnedBuffer();
  };

  int logits_columns() const { return options_.lm_head_rows > 0 ? options_.lm_head_rows : config_.vocab_size; }
  void allocate_buffers();
  void size_kv_cache();
  void ensure_step_capacity(size_t bytes);
  void run_layers(const cuda::StepSections& sections, const std::byte* meta);
  void prepare_samples(const ForwardBatch& batch, const cuda::StepSections& sections);
  // Not while recording calibration amax: a graph's padding rows would count (set_amax_recorder).
  bool graphs_enabled() const { return scratch_block_ >= 0 && !graphs_failed_ && !amax_; }
  // (padded batch, rows per sequence, context bucket): decode graphs have 1 row per sequence.
  using GraphKey = std::tuple<int, int, int>;
  void graph_decode_forward(const ForwardBatch& batch, ForwardResult& result);
  void graph_verify_forward(const ForwardBatch& batch, int rows_per_seq, ForwardResult& result);
  // Uploads the packed graph-layout step (host_graph_meta_), then replays key's graph, or runs the launches and
  // captures them, then the logits and samples.
  void run_graph_step(const GraphKey& key, const cuda::StepSections& sections, const ForwardBatch& batch,
                      ForwardResult& result);
  void capture_graph(const GraphKey& key, const cuda::StepSections& sections, const std::byte* meta);
  void compute_logits(const cuda::StepSections& sections, const std::byte* meta, const ForwardBatch& batch,
                      ForwardResult& result);

  ModelConfig config_;
  CudaBackendOptions options_;
  KvCacheLayout layout_;
  cuda::CudaModelWeights weights_;
  cudaStream_t stream_ = nullptr;
  int num_sms_ = 0;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::unique_ptr<cuda::LinearRunner> linears_;  // the decoder's linear layers, bf16 or quantized

  int qkv_dim_ = 0;
  cuda::DeviceBuffer inv_freq_;
  cuda::DeviceBuffer residual_, delta_, normed_, qkv_, attn_, gate_up_, act_;
  cuda::DeviceBuffer selected_residual_, selected_delta_, final_hidden_, logits_;
  cuda::DeviceBuffer attention_partials_;
  size_t partial_capacity_floats_ = 0;
  cuda::DeviceBuffer step_meta_;  // device copy of the packed step inputs
  PinnedBuffer host_meta_, host_logits_, host_hidden_;
  cuda::DeviceBuffer block_pairs_;
  PinnedBuffer host_pairs_;

  // Device sampling: params packed by lm_head pass (chunk), results in the same order; sample_order_[i] is the
  // device_samples index of packed entry i. Reused every step (capacity only grows).
  PinnedBuffer host_sample_params_, host_sample_out_;
  cuda::DeviceBuffer sample_params_, sample_out_, sample_work_;
  std::vector<int32_t> sample_order_;
  std::vector<int32_t> chunk_sample_begin_;

  // CUDA graphs of decode and verify steps; their inputs live at fixed addresses (graph_meta_), and padding rows
  // write their K/V to scratch_block_, one block past the engine's cache (-1: graphs off). Keyed by GraphKey: the
  // attention split is fixed per context bucket (see graph_decode_forward).
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  GraphCounts graph_counts_;
  cuda::DeviceBuffer graph_meta_;
  PinnedBuffer host_graph_meta_;
  int max_blocks_per_seq_ = 0;
  int scratch_block_ = -1;
  bool graphs_failed_ = false;
  cuda::ActivationAmax* amax_ = nullptr;  // set_amax_recorder

  size_t kv_element_bytes() const { return kv_fp8_ ? 1 : 2; }
  cuda::KvCacheView layer_kv(int layer) const;

  size_t kv_layer_elems_ = 0;                       // elements of one layer's K (or V) cache
  bool kv_fp8_ = false;                             // E4M3 codes with per-layer scales kv_scales_ (else bf16)
  std::vector<std::pair<float, float>> kv_scales_;  // per layer (k_scale, v_scale)
  cuda::DeviceBuffer k_cache_, v_cache_;

  cuda::StepTimer step_timer_;  // QED_CUDA_STEP_TIMING=N: device vs host time per forward, logged every N
};

}  // namespace qed
