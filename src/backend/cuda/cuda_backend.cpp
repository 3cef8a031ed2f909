#include "backend/cuda/cuda_backend.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/batch_checks.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cuda/activation_amax.h"
#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/kv_cache_kernels.h"
#include "backend/cuda/norm_kernels.h"
#include "backend/cuda/pdl.h"
#include "backend/cuda/prefill_attention_kernels.h"
#include "backend/cuda/sampling_kernels.h"
#include "backend/cuda/step_timer.h"
#include "core/dtype.h"
#include "core/error.h"

namespace qed {
namespace {

// Shortest context a decode graph is captured for; longer ones double (see graph_decode_forward).
constexpr int kMinGraphContextBucket = 512;
constexpr size_t kAttentionPartialBytes = size_t(64) << 20;  // split-K scratch: decode batches of 32 × 20 parts fit

void require_device(int index) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky error so later calls report their own
    fail("cuda backend: no CUDA device is visible (no driver, no GPU, or CUDA_VISIBLE_DEVICES hides them)");
  }
  if (index < 0 || index >= count) fail("cuda backend: device {} requested, {} visible", index, count);
  QED_CUDA_CHECK(cudaSetDevice(index));
}

void check_options(const ModelConfig& config, const CudaBackendOptions& options) {
  if (options.block_size <= 0) fail("cuda backend: block_size must be positive, got {}", options.block_size);
  if (options.max_batched_tokens <= 0)
    fail("cuda backend: max_batched_tokens must be positive, got {}", options.max_batched_tokens);
  if (options.max_logits_rows <= 0)
    fail("cuda backend: max_logits_rows must be positive, got {}", options.max_logits_rows);
  if (options.prefill_attention_min_rows < 0)
    fail("cuda backend: prefill_attention_min_rows must be >= 0, got {}", options.prefill_attention_min_rows);
  if (options.row_parallel_reduce && options.cuda_graphs)
    fail("cuda backend: a tensor-parallel rank runs without decode graphs (cuda_graphs must be off)");
  if (options.lm_head_rows < 0) fail("cuda backend: lm_head_rows must be >= 0, got {}", options.lm_head_rows);
  if (!(options.gpu_memory_fraction > 0.0f && options.gpu_memory_fraction <= 1.0f))
    fail("--gpu-memory-fraction must be in (0, 1], got {}", options.gpu_memory_fraction);
  const int hd = config.head_dim;
  if (hd != 16 && hd != 32 && hd != 64 && hd != 128 && hd != 256)
    fail("cuda backend: head_dim {} is not supported (16, 32, 64, 128 or 256)", hd);
}

// Most new rows per sequence (up to `most`) that go to the verify CTA (paged_attention_verify) instead of the
// per-row one, in a step of `seqs` sequences: 0 when QED_VERIFY_ATTENTION=0, for an FP8 KV cache, when the step has
// fewer sequences than QED_VERIFY_ATTENTION_MIN_SEQS (default 12), or when the shape does not fit it (head_dim
// 64/128, GQA group <= 8). Measured on an H200, 14B shape, T = 4, per-row vs verify CTA, us a layer: bf16 cache
// 1 sequence x 1024 keys 19.3 vs 58.6, 8 x 2400 109 vs 149, 12 x 2400 172 vs 157, 16 x 2400 215 vs 213, 32 x 1024
// 192 vs 160, 32 x 4500 749 vs 583; FP8 cache 32 x 1024 157 vs 162, 32 x 4500 589 vs 605 (and fp8 aimo_12x4500 with
// synthetic-p0.6 drafts 2007 vs 1845 tok/s), so FP8 caches keep the per-row CTA.
int verify_attention_rows(const ModelConfig& config, int most, int seqs, bool fp8_cache) {
  static const int min_seqs = cuda::env_int("QED_VERIFY_ATTENTION_MIN_SEQS", 12);
  if (!cuda::verify_attention_enabled() || fp8_cache || seqs < min_seqs) return 0;
  const cuda::AttentionShape shape{config.num_heads, config.num_kv_heads, config.head_dim, 1, 1.0f};
  for (int rows = most; rows >= 2; --rows) {
    if (cuda::attention_verify_supports(shape, rows)) return rows;
  }
  return 0;
}

}  // namespace

KvCacheDtype parse_kv_cache_dtype(const std::string& name) {
  if (name == "auto") return KvCacheDtype::Auto;
  if (name == "bf16") return KvCacheDtype::Bf16;
  if (name == "fp8") return KvCacheDtype::Fp8;
  fail("--kv-cache-dtype must be auto, bf16 or fp8, got '{}'", name);
}

void CudaBackend::PinnedBuffer::reserve(size_t wanted) {
  if (wanted <= bytes) return;
  if (data) QED_CUDA_CHECK(cudaFreeHost(data));
  data = nullptr;
  const size_t grown = std::max(wanted, 2 * bytes);
  QED_CUDA_CHECK(cudaMallocHost(&data, grown));
  bytes = grown;
}

CudaBackend::PinnedBuffer::~PinnedBuffer() {
  if (data) cudaFreeHost(data);
}

CudaBackend::CudaBackend(const ModelConfig& config, cuda::CudaModelWeights weights, const CudaBackendOptions& options)
    : config_(config), options_(options), weights_(std::move(weights)) {
  check_options(config_, options_);
  if (int(weights_.layers.size()) != config_.num_layers)
    fail("cuda backend: {} layers of weights for a config of {}", weights_.layers.size(), config_.num_layers);
  require_device(options_.device);
  QED_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  const cuda::DeviceCaps caps = cuda::device_caps(options_.device);
  num_sms_ = caps.multiprocessors;
  // The A/B switches (docs/cuda.md), read once per backend: QED_PDL=0 plain launches; QED_CUDA_VERIFY_GRAPHS=0 no
  // verify graphs.
  cuda::set_pdl_enabled(caps.sm_major >= 9 && cuda::env_flag("QED_PDL", true));
  if (!cuda::env_flag("QED_CUDA_VERIFY_GRAPHS", true)) options_.verify_graphs = false;
  gemm_ = std::make_unique<cuda::Gemm>(caps);
  if (weights_.has_format(cuda::LinearFormat::Fp8) && caps.sm() < 89) {
    fail(
        "cuda backend: FP8 weights need an sm_89 or newer GPU (this one is sm_{}{}); quantize with --dtype int8_wo "
        "for it",
        caps.sm_major, caps.sm_minor);
  }
  linears_ = std::make_unique<cuda::LinearRunner>(*gemm_, weights_, options_.max_batched_tokens);
  kv_fp8_ = options_.kv_cache_dtype == KvCacheDtype::Fp8 ||
            (options_.kv_cache_dtype == KvCacheDtype::Auto && weights_.has_kv_cache_scales());
  if (kv_fp8_ && (config_.num_kv_heads * config_.head_dim) % 8 != 0) {
    fail("cuda backend: an FP8 KV cache needs num_kv_heads x head_dim divisible by 8, got {}",
         config_.num_kv_heads * config_.head_dim);
  }
  for (const cuda::CudaLayerWeights& l : weights_.layers) {
    // Layers without scales (or --kv-cache-dtype fp8 on a checkpoint without any): 1.0, as vLLM.
    kv_scales_.emplace_back(l.k_cache_scale > 0.0f ? l.k_cache_scale : 1.0f,
                            l.v_cache_scale > 0.0f ? l.v_cache_scale : 1.0f);
  }
  if (!kv_fp8_ && weights_.has_kv_cache_scales()) {
    spdlog::warn("cuda backend: --kv-cache-dtype bf16 ignores the checkpoint's FP8 KV-cache scales (k_scale/v_scale)");
  }
  std::vector<float> inv_freq(size_t(config_.head_dim / 2));
  cpu::rope_inv_freq(config_.head_dim, config_.rope_theta, config_.rope_scaling, inv_freq.data());
  inv_freq_ = cuda::DeviceBuffer(inv_freq.size() * sizeof(float));
  inv_freq_.upload(inv_freq.data(), inv_freq.size() * sizeof(float));
  allocate_buffers();
  size_kv_cache();
}

CudaBackend::~CudaBackend() {
  if (step_timer_.enabled()) {
    // Beside the step times: how many steps the graphs covered (QED_CUDA_VERIFY_GRAPHS=0 A/B runs read it).
    spdlog::info("cuda backend: {} decode-graph steps, {} verify-graph steps, {} of them replays",
                 graph_counts_.decode_steps, graph_counts_.verify_steps, graph_counts_.replays);
  }
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

std::unique_ptr<CudaBackend> CudaBackend::load(const std::string& model_dir, const CudaBackendOptions& options) {
  ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  check_options(config, options);
  require_device(options.device);
  Checkpoint checkpoint = Checkpoint::open(model_dir);
  return std::make_unique<CudaBackend>(config, cuda::CudaModelWeights::upload(checkpoint, config), options);
}

std::unique_ptr<CudaBackend> CudaBackend::random(const ModelConfig& config, uint64_t seed,
                                                 const CudaBackendOptions& options, cuda::RandomWeightsDtype dtype) {
  check_options(config, options);
  require_device(options.device);
  return std::make_unique<CudaBackend>(config, cuda::CudaModelWeights::random(config, seed, dtype), options);
}

void CudaBackend::allocate_buffers() {
  const size_t tokens = size_t(options_.max_batched_tokens);
  const size_t logits_rows = std::min(size_t(options_.max_logits_rows), tokens);
  const size_t hidden = size_t(config_.hidden_size);
  const size_t q_dim = size_t(config_.num_heads) * config_.head_dim;
  const size_t kv_dim = size_t(config_.num_kv_heads) * config_.head_dim;
  const size_t inter = size_t(config_.intermediate_size);
  qkv_dim_ = int(q_dim + 2 * kv_dim);
  const size_t bf16 = sizeof(uint16_t);
  residual_ = cuda::DeviceBuffer(tokens * hidden * bf16);
  delta_ = cuda::DeviceBuffer(tokens * hidden * bf16);
  normed_ = cuda::DeviceBuffer(tokens * hidden * bf16);
  qkv_ = cuda::DeviceBuffer(tokens * size_t(qkv_dim_) * bf16);
  attn_ = cuda::DeviceBuffer(tokens * q_dim * bf16);
  gate_up_ = cuda::DeviceBuffer(tokens * 2 * inter * bf16);
  act_ = cuda::DeviceBuffer(tokens * inter * bf16);
  selected_residual_ = cuda::DeviceBuffer(logits_rows * hidden * bf16);
  selected_delta_ = cuda::DeviceBuffer(logits_rows * hidden * bf16);
  final_hidden_ = cuda::DeviceBuffer(logits_rows * hidden * bf16);
  logits_ = cuda::DeviceBuffer(logits_rows * size_t(logits_columns()) * sizeof(float));
  // The split-K merge counters (zero between launches) after the partials: attention_merge_counters().
  const cuda::AttentionShape counted{config_.num_heads, config_.num_kv_heads, config_.head_dim, 1, 1.0f};
  const size_t counter_bytes = cuda::attention_merge_counters(int(tokens), counted) * sizeof(uint32_t);
  attention_partials_ = cuda::DeviceBuffer(kAttentionPartialBytes + counter_bytes);
  QED_CUDA_CHECK(
      cudaMemsetAsync(attention_partials_.as<uint8_t>() + kAttentionPartialBytes, 0, counter_bytes, stream_));
  partial_capacity_floats_ = kAttentionPartialBytes / sizeof(float);
  host_logits_.reserve(logits_rows * size_t(logits_columns()) * sizeof(float));
  host_hidden_.reserve(logits_rows * hidden * bf16);
  ensure_step_capacity(size_t(1) << 20);
}

void CudaBackend::size_kv_cache() {
  const size_t kv_dim = size_t(config_.num_kv_heads) * config_.head_dim;
  const size_t block_elems = size_t(options_.block_size) * kv_dim;
  const size_t bytes_per_block = 2 * size_t(config_.num_layers) * block_elems * kv_element_bytes();
  size_t blocks = size_t(options_.num_blocks);
  if (blocks == 0) {
    size_t free_bytes = 0, total_bytes = 0;
    QED_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    // The fraction covers everything this process holds (as vLLM's gpu_memory_utilization), less some headroom for
    // cuBLASLt's and the driver's own allocations.
    const double budget = double(options_.gpu_memory_fraction) * double(total_bytes);
    const double used = double(total_bytes - free_bytes);
    const double headroom = std::min(double(size_t(512) << 20), 0.05 * double(total_bytes));
    const double left = budget - used - headroom;
    if (left < double(bytes_per_block)) {
      fail(
          "cuda backend: --gpu-memory-fraction {} of {:.1f} GiB leaves no room for a KV cache block ({:.1f} GiB in "
          "use: {:.1f} GiB weights + buffers)",
          options_.gpu_memory_fraction, double(total_bytes) / double(1 << 30), used / double(1 << 30),
          double(weights_.bytes) / double(1 << 30));
    }
    blocks = std::min(size_t(left / double(bytes_per_block)), size_t(INT_MAX));
  }
  layout_.block_size = options_.block_size;
  layout_.num_blocks = int(blocks);
  size_t allocated = blocks;
  const int max_positions = config_.max_position_embeddings;
  if (options_.cuda_graphs && max_positions > 0 && options_.max_graph_batch > 0) {
    if (options_.num_blocks == 0 && blocks > 1) layout_.num_blocks = int(blocks - 1);  // stay inside the budget
    allocated = size_t(layout_.num_blocks) + 1;
    scratch_block_ = layout_.num_blocks;
    max_blocks_per_seq_ = (max_positions + options_.block_size - 1) / options_.block_size;
    const int widest = std::min(options_.max_graph_batch, options_.max_batched_tokens);
    const int max_kv = max_blocks_per_seq_ * options_.block_size;
    const size_t largest = std::max(
        cuda::decode_graph_sections(widest, max_blocks_per_seq_, max_kv).total_bytes,
        cuda::verify_graph_sections(widest, cuda::kMaxGraphVerifyRows, max_blocks_per_seq_, max_kv, true).total_bytes);
    graph_meta_ = cuda::DeviceBuffer(largest);
    host_graph_meta_.reserve(largest);
  }
  kv_layer_elems_ = allocated * block_elems;
  // Uninitialised on purpose: every slot is written before it is read.
  k_cache_ = cuda::DeviceBuffer(kv_layer_elems_ * size_t(config_.num_layers) * kv_element_bytes());
  v_cache_ = cuda::DeviceBuffer(kv_layer_elems_ * size_t(config_.num_layers) * kv_element_bytes());
  // Debug, not info: spdlog's default sink is stdout, which carries generated text (qed generate's output must
  // equal the CPU backend's); qed bench offline reports the same number as kv_capacity_tokens.
  spdlog::debug("cuda backend: KV cache {} blocks x {} tokens = {} tokens, {} ({:.2f} GiB)", layout_.num_blocks,
                layout_.block_size, size_t(layout_.num_blocks) * size_t(layout_.block_size),
                kv_fp8_ ? "fp8 e4m3" : "bf16", double(kv_cache_bytes()) / double(1 << 30));
}

cuda::KvCacheView CudaBackend::layer_kv(int layer) const {
  const size_t offset = size_t(layer) * kv_layer_elems_ * kv_element_bytes();
  cuda::KvCacheView view;
  view.k = k_cache_.as<uint8_t>() + offset;
  view.v = v_cache_.as<uint8_t>() + offset;
  view.fp8 = kv_fp8_;
  view.k_scale = kv_scales_[size_t(layer)].first;
  view.v_scale = kv_scales_[size_t(layer)].second;
  return view;
}

void CudaBackend::ensure_step_capacity(size_t bytes) {
  host_meta_.reserve(bytes);
  if (step_meta_.bytes() < bytes) {
    // Only when a step's metadata outgrows every earlier one (the stream is idle between forwards).
    step_meta_ = cuda::DeviceBuffer(std::max(bytes, 2 * step_meta_.bytes()));
  }
}

void CudaBackend::forward(const ForwardBatch& batch, ForwardResult& result) {
  // The current device is per host thread, and the engine may run on another thread than the one that built the
  // backend (qed serve's engine loop): without this, --gpu-device N > 0 would launch on device 0.
  QED_CUDA_CHECK(cudaSetDevice(options_.device));
  validate_forward_batch(batch, config_.vocab_size, layout_);
  const cuda::StepTimer::Scope timing(step_timer_, stream_);
  if (graphs_enabled()) {
    const int max_seqs = std::min(options_.max_graph_batch, options_.max_batched_tokens);
    if (cuda::is_graph_decode_step(batch, max_seqs, max_blocks_per_seq_)) {
      graph_decode_forward(batch, result);
      return;
    }
    const int rows_per_seq = options_.verify_graphs
                                 ? cuda::graph_verify_rows(batch, max_seqs, max_blocks_per_seq_,
                                                           cuda::kMaxGraphVerifyRows, options_.max_batched_tokens)
                                 : 0;
    if (rows_per_seq > 0) {
      graph_verify_forward(batch, rows_per_seq, result);
      return;
    }
  }
  cuda::AttentionRouting routing;
  routing.prefill_min_rows =
      cuda::prefill_attention_supports(config_.head_dim) ? options_.prefill_attention_min_rows : 0;
  // The tiling follows the longest chunk that goes to the prefill kernel (routing does not depend on tile rows).
  routing.prefill_tile_rows = cuda::kPrefillTiling.rows;
  int longest_chunk = 0;
  for (const SequenceChunk& seq : batch.sequences) {
    if (cuda::routes_to_prefill(seq, routing)) longest_chunk = std::max(longest_chunk, int(seq.tokens.size()));
  }
  routing.prefill_tile_rows = cuda::prefill_tiling_for(longest_chunk).rows;
  routing.verify_max_rows =
      verify_attention_rows(config_, cuda::kMaxGraphVerifyRows, int(batch.sequences.size()), kv_fp8_);
  const cuda::StepSections sections = cuda::measure_step(batch, routing);
  if (sections.rows > options_.max_batched_tokens) {
    fail("cuda backend: a forward of {} tokens exceeds max_batched_tokens {}", sections.rows,
         options_.max_batched_tokens);
  }
  ensure_step_capacity(sections.total_bytes);
  if (!batch.device_samples.empty()) prepare_samples(batch, sections);
  cuda::pack_step(batch, layout_.block_size, sections, static_cast<std::byte*>(host_meta_.data));
  QED_CUDA_CHECK(
      cudaMemcpyAsync(step_meta_.data(), host_meta_.data, sections.total_bytes, cudaMemcpyHostToDevice, stream_));
  const std::byte* meta = step_meta_.as<const std::byte>();
  run_layers(sections, meta);
  compute_logits(sections, meta, batch, result);
}

void CudaBackend::graph_decode_forward(const ForwardBatch& batch, ForwardResult& result) {
  const int real = int(batch.sequences.size());
  const int padded = cuda::graph_batch_size(real, std::min(options_.max_graph_batch, options_.max_batched_tokens));
  // The attention split (partition count and size) is baked into a captured graph, so graphs are kept per context
  // bucket: a power of two >= the longest context of the step. Splitting for the longest possible context instead
  // made every CTA scan max_positions / partitions keys (measured: decode 15% slower than eager at 1k context).
  int longest = 1;
  for (const SequenceChunk& seq : batch.sequences) longest = std::max(longest, int(seq.num_cached) + 1);
  const int bucket =
      cuda::graph_context_bucket(longest, kMinGraphContextBucket, max_blocks_per_seq_ * layout_.block_size);
  cuda::StepSections sections = cuda::decode_graph_sections(padded, max_blocks_per_seq_, bucket);
  cuda::pack_decode_step(batch, layout_.block_size, sections, padded, max_blocks_per_seq_, scratch_block_,
                         static_cast<std::byte*>(host_graph_meta_.data));
  sections.logits_count = real;  // the padding rows' logits are never computed
  ++graph_counts_.decode_steps;
  run_graph_step({padded, 1, bucket}, sections, batch, result);
}

void CudaBackend::graph_verify_forward(const ForwardBatch& batch, int rows_per_seq, ForwardResult& result) {
  const int real = int(batch.sequences.size());
  const int padded = cuda::graph_batch_size(real, std::min(options_.max_graph_batch, options_.max_batched_tokens));
  int longest = 1, logits_count = 0;
  for (const SequenceChunk& seq : batch.sequences) {
    longest = std::max(longest, int(seq.num_cached) + int(seq.tokens.size()));
    logits_count += seq.logits_indices.empty() ? 1 : int(seq.logits_indices.size());
  }
  const int bucket =
      cuda::graph_context_bucket(longest, kMinGraphContextBucket, max_blocks_per_seq_ * layout_.block_size);
  const bool verify_cta =
      rows_per_seq >= 2 && verify_attention_rows(config_, rows_per_seq, padded, kv_fp8_) >= rows_per_seq;
  cuda::StepSections sections =
      cuda::verify_graph_sections(padded, rows_per_seq, max_blocks_per_seq_, bucket, verify_cta);
  cuda::pack_verify_step(batch, layout_.block_size, sections, padded, rows_per_seq, max_blocks_per_seq_, scratch_block_,
                         static_cast<std::byte*>(host_graph_meta_.data));
  sections.logits_count = logits_count;  // the lm_head runs after the graph, over the real rows only
  ++graph_counts_.verify_steps;
  run_graph_step({padded, rows_per_seq, bucket}, sections, batch, result);
}

void CudaBackend::run_graph_step(const GraphKey& key, const cuda::StepSections& sections, const ForwardBatch& batch,
                                 ForwardResult& result) {
  if (!batch.device_samples.empty()) prepare_samples(batch, sections);
  QED_CUDA_CHECK(cudaMemcpyAsync(graph_meta_.data(), host_graph_meta_.data, sections.total_bytes,
                                 cudaMemcpyHostToDevice, stream_));
  const std::byte* meta = graph_meta_.as<const std::byte>();
  const auto graph = graphs_.find(key);
  if (graph != graphs_.end()) {
    QED_CUDA_CHECK(cudaGraphLaunch(graph->second, stream_));
    ++graph_counts_.replays;
  } else {
    // The first step of a key runs eagerly (lazy module loading and GEMM plans happen outside any capture), then
    // the same launches are captured for the next ones; this step's result never depends on the capture.
    run_layers(sections, meta);
    if (options_.replay_graphs) capture_graph(key, sections, meta);
  }
  compute_logits(sections, meta, batch, result);
}

void CudaBackend::capture_graph(const GraphKey& key, const cuda::StepSections& sections, const std::byte* meta) {
  cudaGraph_t graph = nullptr;
  QED_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  std::string problem;
  try {
    run_layers(sections, meta);
  } catch (const std::exception& e) {
    problem = e.what();
  }
  const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
  cudaGraphExec_t exec = nullptr;
  if (problem.empty() && ended == cudaSuccess && graph) {
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    if (made != cudaSuccess) problem = cudaGetErrorString(made);
  } else if (problem.empty()) {
    problem = cudaGetErrorString(ended);
  }
  if (graph) cudaGraphDestroy(graph);
  if (!problem.empty()) {
    cudaGetLastError();  // the failed capture's error is not the next launch's
    graphs_failed_ = true;
    spdlog::warn(
        "cuda backend: capturing the graph for {} sequences x {} rows, context {} failed ({}); running without "
        "graphs",
        std::get<0>(key), std::get<1>(key), std::get<2>(key), problem);
    return;
  }
  graphs_.emplace(key, exec);
}

bool CudaBackend::can_sample_on_device(const SamplingParams& params) const {
  return params.repetition_penalty == 1.0f && params.logprobs <= cuda::kMaxTopLogprobs;
}

void CudaBackend::prepare_samples(const ForwardBatch& batch, const cuda::StepSections& sections) {
  const int capacity = std::min(options_.max_logits_rows, options_.max_batched_tokens);
  const int chunks = (sections.logits_count + capacity - 1) / capacity;
  const size_t count = batch.device_samples.size();
  chunk_sample_begin_.assign(size_t(chunks) + 1, 0);
  for (size_t i = 0; i < count; ++i) {
    const DeviceSample& sample = batch.device_samples[i];
    if (!sample.params || sample.row < 0 || sample.row >= sections.logits_count) {
      fail("forward: device sample {} names logits row {} of {}", i, sample.row, sections.logits_count);
    }
    if (!can_sample_on_device(*sample.params)) fail("forward: device sample {} has host-only parameters", i);
    ++chunk_sample_begin_[size_t(sample.row / capacity) + 1];
  }
  int widest = 0;
  for (int c = 0; c < chunks; ++c) {
    widest = std::max(widest, chunk_sample_begin_[size_t(c) + 1]);
    chunk_sample_begin_[size_t(c) + 1] += chunk_sample_begin_[size_t(c)];
  }
  // Counting sort by lm_head pass, stable, so each pass samples one contiguous range.
  sample_order_.assign(count, 0);
  host_sample_params_.reserve(count * sizeof(cuda::SamplingRowParams));
  host_sample_out_.reserve(count * sizeof(cuda::SampledRow));
  auto* params = static_cast<cuda::SamplingRowParams*>(host_sample_params_.data);
  std::vector<int32_t>& next = chunk_sample_begin_;  // advanced while placing, restored below
  for (size_t i = 0; i < count; ++i) {
    const DeviceSample& sample = batch.device_samples[i];
    const int chunk = sample.row / capacity;
    const int at = next[size_t(chunk)]++;
    const SamplingParams& p = *sample.params;
    params[at] = {
        sample.row - chunk * capacity, p.temperature, p.top_p, p.min_p, p.top_k, p.logprobs, sample.seed, sample.step};
    sample_order_[size_t(at)] = int32_t(i);
  }
  for (int c = chunks; c > 0; --c) next[size_t(c)] = next[size_t(c) - 1];  // next[c] had advanced to begin[c + 1]
  next[0] = 0;
  const size_t work_bytes = size_t(widest) * size_t(logits_columns()) * sizeof(float);
  if (sample_work_.bytes() < work_bytes) sample_work_ = cuda::DeviceBuffer(work_bytes);
  if (sample_params_.bytes() < count * sizeof(cuda::SamplingRowParams)) {
    sample_params_ = cuda::DeviceBuffer(count * sizeof(cuda::SamplingRowParams));
  }
  if (sample_out_.bytes() < count * sizeof(cuda::SampledRow)) {
    sample_out_ = cuda::DeviceBuffer(count * sizeof(cuda::SampledRow));
  }
  QED_CUDA_CHECK(cudaMemcpyAsync(sample_params_.data(), host_sample_params_.data,
                                 count * sizeof(cuda::SamplingRowParams), cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::run_layers(const cuda::StepSections& s, const std::byte* meta) {
  auto ints = [meta](size_t offset) { return reinterpret_cast<const int32_t*>(meta + offset); };
  const int rows = s.rows;
  const int hidden = config_.hidden_size;
  const int q_dim = config_.num_heads * config_.head_dim;
  const int kv_dim = config_.num_kv_heads * config_.head_dim;
  const int inter = config_.intermediate_size;
  const float eps = config_.rms_norm_eps;

  cuda::AttentionBatch attention;
  attention.row_seq = ints(s.row_seq);
  attention.seq_q_start = ints(s.seq_q_start);
  attention.seq_num_new = ints(s.seq_num_new);
  attention.seq_num_cached = ints(s.seq_num_cached);
  attention.seq_block_offset = ints(s.seq_block_offset);
  attention.block_tables = ints(s.block_tables);
  attention.seq_mask_offset = ints(s.seq_mask_offset);
  attention.masks = reinterpret_cast<const uint8_t*>(meta + s.masks);
  // The flash-decoding kernel computes the decode rows (all rows, in order, when no chunk went to prefill tiles).
  attention.row_list = s.decode_row_count == rows ? nullptr : ints(s.decode_rows);
  attention.rows = s.decode_row_count;
  attention.max_kv_len = s.decode_max_kv_len;
  const cuda::AttentionShape shape{config_.num_heads, config_.num_kv_heads, config_.head_dim, layout_.block_size,
                                   1.0f / std::sqrt(float(config_.head_dim))};
  const int partitions = cuda::attention_partitions(attention, shape, num_sms_, partial_capacity_floats_);
  const int verify_partitions = cuda::attention_verify_partitions(s.verify_seq_count, s.verify_max_kv_len, rows, shape,
                                                                  num_sms_, partial_capacity_floats_);

  uint16_t* residual = residual_.as<uint16_t>();
  uint16_t* delta = delta_.as<uint16_t>();
  uint16_t* normed = normed_.as<uint16_t>();
  uint16_t* qkv = qkv_.as<uint16_t>();
  cuda::gather_rows_bf16(weights_.embed_tokens.as<uint16_t>(), ints(s.token_ids), residual, rows, hidden, stream_);
  for (int l = 0; l < config_.num_layers; ++l) {
    const cuda::CudaLayerWeights& w = weights_.layers[size_t(l)];
    // residual += previous sublayer output (bf16, as HF), then normalise; layer 0 normalises the embedding.
    // A static-scale FP8 layer's input is quantized by the kernel that writes it (no separate pass).
    const float* qkv_fp8 = cuda::LinearRunner::static_fp8_scale(w.qkv);
    cuda::rmsnorm_bf16(l == 0 ? residual : delta, l == 0 ? nullptr : residual, w.input_norm.as<uint16_t>(), normed,
                       rows, hidden, eps, stream_, qkv_fp8 ? linears_->fp8_input() : nullptr, qkv_fp8);
    if (amax_) amax_->record(l, cuda::AmaxSite::QkvInput, normed, rows, hidden, hidden, stream_);
    linears_->run(w.qkv, normed, qkv, rows, stream_, qkv_fp8 ? linears_->fp8_input() : nullptr);
    // RoPE on the q and k heads of the qkv rows and the K/V cache write, one launch.
    const cuda::KvCacheView cache = layer_kv(l);
    const cuda::KvCacheTarget target{const_cast<void*>(cache.k), const_cast<void*>(cache.v), kv_fp8_, cache.k_scale,
                                     cache.v_scale};
    cuda::rope_write_kv(qkv, qkv_dim_, ints(s.positions), inv_freq_.as<float>(), ints(s.slot_mapping), target, rows,
                        config_.num_heads, config_.num_kv_heads, config_.head_dim, stream_);
    // One step may use both attention kernels, on disjoint rows of attn_. When the decode kernel computes every
    // row, it also writes the E4M3 input of a static-scale FP8 o_proj (as RMSNorm does for qkv and gate_up).
    const float* o_fp8 = cuda::LinearRunner::static_fp8_scale(w.o_proj);
    // The verify CTA covers the rest of the rows (graph steps: padding rows as zeros) when no prefill tile runs.
    const bool o_fp8_fused = o_fp8 && s.prefill_tile_count == 0;
    if (s.decode_row_count > 0) {
      cuda::paged_attention(qkv, qkv_dim_, cache, attention, shape, partitions, attention_partials_.as<float>(),
                            attn_.as<uint16_t>(), stream_, options_.decode_kernel,
                            o_fp8_fused ? linears_->fp8_input() : nullptr, o_fp8_fused ? o_fp8 : nullptr,
                            reinterpret_cast<uint32_t*>(attention_partials_.as<uint8_t>() + kAttentionPartialBytes));
    }
    if (s.verify_seq_count > 0) {
      cuda::paged_attention_verify(
          qkv, qkv_dim_, cache, attention, ints(s.verify_seqs), s.verify_seq_count, s.verify_max_rows, shape,
          verify_partitions, attention_partials_.as<float>(), attn_.as<uint16_t>(), stream_,
          o_fp8_fused ? linears_->fp8_input() : nullptr, o_fp8_fused ? o_fp8 : nullptr,
          reinterpret_cast<uint32_t*>(attention_partials_.as<uint8_t>() + kAttentionPartialBytes), s.verify_slot_rows);
    }
    if (s.prefill_tile_count > 0) {
      cuda::prefill_attention(qkv, qkv_dim_, cache, attention, ints(s.prefill_tiles), s.prefill_tile_count,
                              cuda::prefill_tiling_of(s.routing.prefill_tile_rows), shape, attn_.as<uint16_t>(),
                              stream_);
    }
    if (amax_) {
      // K (after RoPE) and V as the cache write read them: attention leaves the qkv rows as they were.
      amax_->record(l, cuda::AmaxSite::K, qkv + q_dim, rows, kv_dim, qkv_dim_, stream_);
      amax_->record(l, cuda::AmaxSite::V, qkv + q_dim + kv_dim, rows, kv_dim, qkv_dim_, stream_);
      amax_->record(l, cuda::AmaxSite::OInput, attn_.as<uint16_t>(), rows, q_dim, q_dim, stream_);
    }
    linears_->run(w.o_proj, attn_.as<uint16_t>(), delta, rows, stream_, o_fp8_fused ? linears_->fp8_input() : nullptr);
    if (options_.row_parallel_reduce) options_.row_parallel_reduce(delta, size_t(rows) * hidden, stream_);
    const float* gate_up_fp8 = cuda::LinearRunner::static_fp8_scale(w.gate_up);
    cuda::rmsnorm_bf16(delta, residual, w.post_attention_norm.as<uint16_t>(), normed, rows, hidden, eps, stream_,
                       gate_up_fp8 ? linears_->fp8_input() : nullptr, gate_up_fp8);
    if (amax_) amax_->record(l, cuda::AmaxSite::GateUpInput, normed, rows, hidden, hidden, stream_);
    const float* down_fp8 = cuda::LinearRunner::static_fp8_scale(w.down_proj);
    const uint8_t* gate_up_in = gate_up_fp8 ? linears_->fp8_input() : nullptr;
    // At decode rows SiLU-and-mul is the gate_up GEMV's epilogue where the plan runs one (no gate_up_ round trip,
    // one launch fewer), its E4M3 output in silu_fp8_output() since the GEMV reads fp8_input().
    const uint8_t* down_in = nullptr;
    if (linears_->run_gate_up_silu(w.gate_up, normed, act_.as<uint16_t>(), rows, stream_, gate_up_in, down_fp8)) {
      down_in = down_fp8 ? linears_->silu_fp8_output() : nullptr;
    } else {
      linears_->run(w.gate_up, normed, gate_up_.as<uint16_t>(), rows, stream_, gate_up_in);
      cuda::silu_and_mul_bf16(gate_up_.as<uint16_t>(), act_.as<uint16_t>(), rows, inter, stream_,
                              down_fp8 ? linears_->fp8_input() : nullptr, down_fp8);
      down_in = down_fp8 ? linears_->fp8_input() : nullptr;
    }
    if (amax_) amax_->record(l, cuda::AmaxSite::DownInput, act_.as<uint16_t>(), rows, inter, inter, stream_);
    linears_->run(w.down_proj, act_.as<uint16_t>(), delta, rows, stream_, down_in);
    if (options_.row_parallel_reduce) options_.row_parallel_reduce(delta, size_t(rows) * hidden, stream_);
  }
}

void CudaBackend::compute_logits(const cuda::StepSections& s, const std::byte* meta, const ForwardBatch& batch,
                                 ForwardResult& result) {
  const bool want_hidden = batch.want_hidden;
  const bool logits_to_host = !batch.skip_logits;
  const size_t num_samples = batch.device_samples.size();
  const int hidden = config_.hidden_size;
  const int vocab = logits_columns();
  const int32_t* logits_rows = reinterpret_cast<const int32_t*>(meta + s.logits_rows);
  const int capacity = int(std::min(options_.max_logits_rows, options_.max_batched_tokens));
  const cuda::DeviceBuffer& lm_head = config_.tie_word_embeddings ? weights_.embed_tokens : weights_.lm_head;
  const cuda::GemmWeight head{lm_head.data(), cuda::GemmType::BF16, vocab, hidden, nullptr};
  result.rows = s.logits_count;
  if (logits_to_host) {
    result.logits.resize(size_t(s.logits_count) * vocab);
  } else {
    result.logits.clear();
  }
  if (want_hidden) {
    result.hidden.resize(size_t(s.logits_count) * hidden);
  } else {
    result.hidden.clear();
  }
  // Only the wanted rows go through the final norm and the (large) lm_head, `capacity` rows per pass.
  for (int begin = 0; begin < s.logits_count; begin += capacity) {
    const int n = std::min(capacity, s.logits_count - begin);
    cuda::gather_rows_bf16(residual_.as<uint16_t>(), logits_rows + begin, selected_residual_.as<uint16_t>(), n, hidden,
                           stream_);
    cuda::gather_rows_bf16(delta_.as<uint16_t>(), logits_rows + begin, selected_delta_.as<uint16_t>(), n, hidden,
                           stream_);
    cuda::rmsnorm_bf16(selected_delta_.as<uint16_t>(), selected_residual_.as<uint16_t>(),
                       weights_.final_norm.as<uint16_t>(), final_hidden_.as<uint16_t>(), n, hidden,
                       config_.rms_norm_eps, stream_);
    // Without logits for the host or samples to draw (want_hidden alone: the trainer's base forward), no lm_head.
    if (logits_to_host || num_samples > 0) {
      gemm_->run(final_hidden_.data(), cuda::GemmType::BF16, head, nullptr, logits_.data(), cuda::GemmType::F32, n,
                 stream_);
    }
    if (num_samples > 0) {
      const int chunk = begin / capacity;
      const int first = chunk_sample_begin_[size_t(chunk)];
      const int samples_here = chunk_sample_begin_[size_t(chunk) + 1] - first;
      cuda::sample_rows(logits_.as<float>(), samples_here, vocab, sample_params_.as<cuda::SamplingRowParams>() + first,
                        sample_work_.as<float>(), sample_out_.as<cuda::SampledRow>() + first, stream_);
    }
    if (!logits_to_host && !want_hidden) continue;  // nothing of this pass goes to the host: no sync
    const size_t logits_bytes = size_t(n) * vocab * sizeof(float);
    if (logits_to_host) {
      QED_CUDA_CHECK(cudaMemcpyAsync(host_logits_.data, logits_.data(), logits_bytes, cudaMemcpyDeviceToHost, stream_));
    }
    const size_t hidden_bytes = size_t(n) * hidden * sizeof(uint16_t);
    if (want_hidden) {
      QED_CUDA_CHECK(
          cudaMemcpyAsync(host_hidden_.data, final_hidden_.data(), hidden_bytes, cudaMemcpyDeviceToHost, stream_));
    }
    QED_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (logits_to_host) std::memcpy(result.logits.data() + size_t(begin) * vocab, host_logits_.data, logits_bytes);
    if (want_hidden) {
      const uint16_t* bits = static_cast<const uint16_t*>(host_hidden_.data);
      float* dst = result.hidden.data() + size_t(begin) * hidden;
      for (size_t i = 0; i < size_t(n) * hidden; ++i) dst[i] = bf16_to_float(bits[i]);
    }
  }
  result.samples.resize(num_samples);
  if (num_samples > 0) {
    QED_CUDA_CHECK(cudaMemcpyAsync(host_sample_out_.data, sample_out_.data(), num_samples * sizeof(cuda::SampledRow),
                                   cudaMemcpyDeviceToHost, stream_));
  }
  step_timer_.mark_device_end(stream_);
  QED_CUDA_CHECK(cudaStreamSynchronize(stream_));  // also when every pass skipped its copies
  const auto* rows = static_cast<const cuda::SampledRow*>(host_sample_out_.data);
  for (size_t at = 0; at < num_samples; ++at) {
    const int32_t index = sample_order_[at];
    const SamplingParams& params = *batch.device_samples[size_t(index)].params;
    SampledToken& token = result.samples[size_t(index)];
    token.token = rows[at].token;
    token.logprob = params.logprobs >= 0 ? rows[at].logprob : 0.0f;
    token.top.clear();
    const int k = std::min(params.logprobs, vocab);
    for (int j = 0; j < k; ++j) token.top.push_back({rows[at].top_tokens[j], rows[at].top_logprobs[j]});
  }
}

void CudaBackend::copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) {
  validate_block_pairs(src_dst, layout_.num_blocks);
  if (src_dst.empty()) return;
  QED_CUDA_CHECK(cudaSetDevice(options_.device));  // as in forward(): the caller's thread may not have it current
  // The kernel copies all pairs at once; a destination that is also a source would race, so such (engine-unusual)
  // chains go one pair per launch, in order, as the CPU backend does them.
  bool chained = false;
  for (const auto& a : src_dst) {
    for (const auto& b : src_dst) chained |= a.second == b.first && a.first != a.second;
  }
  host_pairs_.reserve(src_dst.size() * 2 * sizeof(int32_t));
  if (block_pairs_.bytes() < src_dst.size() * 2 * sizeof(int32_t)) {
    block_pairs_ = cuda::DeviceBuffer(src_dst.size() * 2 * sizeof(int32_t));
  }
  int32_t* host = static_cast<int32_t*>(host_pairs_.data);
  int count = 0;
  for (const auto& [src, dst] : src_dst) {
    if (src == dst) continue;
    host[2 * count] = src;
    host[2 * count + 1] = dst;
    ++count;
  }
  if (count == 0) return;
  QED_CUDA_CHECK(
      cudaMemcpyAsync(block_pairs_.data(), host, size_t(count) * 2 * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  const size_t block_bytes = size_t(layout_.block_size) * config_.num_kv_heads * config_.head_dim * kv_element_bytes();
  const int launches = chained ? count : 1;
  for (int i = 0; i < launches; ++i) {
    cuda::copy_kv_blocks(k_cache_.data(), v_cache_.data(), kv_layer_elems_ * kv_element_bytes(), config_.num_layers,
                         block_pairs_.as<int32_t>() + 2 * i, chained ? 1 : count, block_bytes, stream_);
  }
  // The pinned pairs are reused by the next call.
  QED_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace qed
