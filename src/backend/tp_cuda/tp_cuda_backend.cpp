#include "backend/tp_cuda/tp_cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "backend/batch_checks.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/tp/rank_threads.h"
#include "backend/tp_cuda/nccl_api.h"
#include "core/dtype.h"
#include "core/error.h"
#include "model/safetensors.h"

namespace qed::tp {
namespace {

void nccl_check(ncclResult_t result, const char* what) {
  if (result != ncclSuccess) fail("nccl: {} failed: {}", what, nccl_api().error_string(result));
}

// A bf16 copy of a host tensor (bf16 as is, f16/f32 rounded) on the current device.
cuda::DeviceBuffer upload_bf16(const TensorInfo& t) {
  const size_t n = size_t(t.numel());
  cuda::DeviceBuffer buffer(n * sizeof(uint16_t));
  if (t.dtype == DType::BF16) {
    buffer.upload(t.data, n * sizeof(uint16_t));
  } else {
    std::vector<uint16_t> converted(n);
    for (size_t i = 0; i < n; ++i) converted[i] = float_to_bf16(t.at(i));
    buffer.upload(converted.data(), n * sizeof(uint16_t));
  }
  return buffer;
}

}  // namespace

struct NcclComms {
  std::vector<ncclComm_t> comms;
  ~NcclComms() {
    for (ncclComm_t comm : comms) {
      if (comm) nccl_api().comm_destroy(comm);  // non-null only once the library has loaded
    }
  }
};

TpCudaBackend::TpCudaBackend(const ModelConfig& config, const TpCudaOptions& options)
    : config_(config), options_(options), plan_(ShardPlan::make(config, options.ranks)) {
  int visible = 0;
  if (cudaGetDeviceCount(&visible) != cudaSuccess) {
    cudaGetLastError();
    visible = 0;
  }
  if (options.first_device < 0 || options.first_device + options.ranks > visible) {
    fail("--tensor-parallel-size {}: needs devices {}..{}, {} visible", options.ranks, options.first_device,
         options.first_device + options.ranks - 1, visible);
  }
  std::vector<int> devices;
  for (int r = 0; r < options.ranks; ++r) devices.push_back(options.first_device + r);
  comms_ = std::make_unique<NcclComms>();
  comms_->comms.resize(devices.size());
  const NcclApi& nccl = nccl_api();  // a missing libnccl is reported before any device memory is used
  nccl_check(nccl.comm_init_all(comms_->comms.data(), int(devices.size()), devices.data()), "ncclCommInitAll");
  threads_ = std::make_unique<RankThreads>(options.ranks, [&](int r) {
    if (cudaSetDevice(devices[size_t(r)]) != cudaSuccess) {
      cudaGetLastError();
      fail("tensor parallelism: cannot use device {}", devices[size_t(r)]);
    }
  });
  rank_results_.resize(devices.size());
}

TpCudaBackend::~TpCudaBackend() {
  threads_.reset();
  // Each rank's streams and buffers are released with its device current.
  for (size_t r = 0; r < ranks_.size(); ++r) {
    cudaSetDevice(options_.first_device + int(r));
    ranks_[r].reset();
  }
  comms_.reset();
}

void TpCudaBackend::add_rank(int r, cuda::CudaModelWeights weights, const ModelConfig& rank_config) {
  CudaBackendOptions rank = options_.rank;
  rank.device = options_.first_device + r;
  rank.cuda_graphs = false;
  rank.lm_head_rows = plan_.vocab_shard;
  ncclComm_t comm = comms_->comms[size_t(r)];
  rank.row_parallel_reduce = [comm](uint16_t* x, size_t count, cudaStream_t stream) {
    nccl_check(nccl_api().all_reduce(x, x, count, ncclBfloat16, ncclSum, comm, stream), "ncclAllReduce");
  };
  // The lm_head slice is weights.lm_head: the rank's config is untied so its logits pass reads it.
  ModelConfig config = rank_config;
  config.tie_word_embeddings = false;
  ranks_.push_back(std::make_unique<CudaBackend>(config, std::move(weights), rank));
}

void TpCudaBackend::finish_layout() {
  // Every rank sized its own cache from its device's free memory; the engine may use the blocks all of them have.
  layout_ = ranks_[0]->kv_layout();
  for (const auto& rank : ranks_) layout_.num_blocks = std::min(layout_.num_blocks, rank->kv_layout().num_blocks);
}

std::unique_ptr<TpCudaBackend> TpCudaBackend::load(const std::string& model_dir, const TpCudaOptions& options) {
  const ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  std::unique_ptr<TpCudaBackend> backend(new TpCudaBackend(config, options));
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  for (int r = 0; r < options.ranks; ++r) {
    // One shard at a time in host memory (views into the mmap plus the copied row-parallel columns).
    const RankShard shard = make_rank_shard(checkpoint, config, backend->plan_, r);
    QED_CUDA_CHECK(cudaSetDevice(options.first_device + r));
    cuda::CudaModelWeights weights = cuda::CudaModelWeights::upload(shard.checkpoint, shard.config);
    weights.lm_head = upload_bf16(shard.checkpoint.get(kLmHeadShardName));
    weights.bytes += weights.lm_head.bytes();
    QED_CUDA_CHECK(cudaDeviceSynchronize());
    backend->add_rank(r, std::move(weights), shard.config);
  }
  backend->finish_layout();
  return backend;
}

std::unique_ptr<TpCudaBackend> TpCudaBackend::random(const ModelConfig& config, uint64_t seed,
                                                     const TpCudaOptions& options, cuda::RandomWeightsDtype dtype) {
  config.validate("random weights");
  std::unique_ptr<TpCudaBackend> backend(new TpCudaBackend(config, options));
  for (int r = 0; r < options.ranks; ++r) {
    const RankSlice& s = backend->plan_.slices[size_t(r)];
    ModelConfig rank_config = config;
    rank_config.num_heads = s.q_heads;
    rank_config.num_kv_heads = s.kv_heads;
    rank_config.intermediate_size = s.inter;
    rank_config.tie_word_embeddings = true;  // no full lm_head: the rank's slice is made below
    QED_CUDA_CHECK(cudaSetDevice(options.first_device + r));
    cuda::CudaModelWeights weights = cuda::CudaModelWeights::random(rank_config, seed + uint64_t(r), dtype);
    const size_t head_elems = size_t(backend->plan_.vocab_shard) * size_t(config.hidden_size);
    weights.lm_head = cuda::DeviceBuffer(head_elems * sizeof(uint16_t));
    const float a = 0.02f * 1.7320508f;  // CudaModelWeights::random's scale
    cuda::fill_uniform_bf16(weights.lm_head.as<uint16_t>(), head_elems, seed ^ 0x9E3779B97F4A7C15ull ^ uint64_t(r), -a,
                            a, nullptr);
    weights.bytes += weights.lm_head.bytes();
    QED_CUDA_CHECK(cudaDeviceSynchronize());
    backend->add_rank(r, std::move(weights), rank_config);
  }
  backend->finish_layout();
  return backend;
}

void TpCudaBackend::forward(const ForwardBatch& batch, ForwardResult& result) {
  // Checked once here so that every rank accepts the batch: a rank that failed alone after the others had issued
  // their all-reduces would leave them waiting.
  validate_forward_batch(batch, config_.vocab_size, layout_);
  if (!batch.device_samples.empty() || batch.skip_logits) {
    fail("forward: the tensor-parallel backend samples on the host (can_sample_on_device is false)");
  }
  threads_->run([&](int r) { ranks_[size_t(r)]->forward(batch, rank_results_[size_t(r)]); });
  // The gather: rank r's first slice.vocab columns are vocab columns [vocab_begin, vocab_begin + vocab).
  const int rows = rank_results_[0].rows;
  const int vocab = config_.vocab_size, shard = plan_.vocab_shard;
  result.rows = rows;
  result.logits.resize(size_t(rows) * vocab);
  for (int r = 0; r < plan_.ranks; ++r) {
    const RankSlice& s = plan_.slices[size_t(r)];
    const std::vector<float>& part = rank_results_[size_t(r)].logits;
    for (int row = 0; row < rows && s.vocab > 0; ++row) {
      std::memcpy(result.logits.data() + size_t(row) * vocab + s.vocab_begin, part.data() + size_t(row) * shard,
                  size_t(s.vocab) * sizeof(float));
    }
  }
  // After each all-reduce every rank holds the same residual stream, so rank 0's final hidden state is everyone's.
  result.hidden = std::move(rank_results_[0].hidden);
  result.samples.clear();
}

void TpCudaBackend::copy_kv_blocks(std::span<const std::pair<int32_t, int32_t>> src_dst) {
  validate_block_pairs(src_dst, layout_.num_blocks);
  threads_->run([&](int r) { ranks_[size_t(r)]->copy_kv_blocks(src_dst); });
}

}  // namespace qed::tp
