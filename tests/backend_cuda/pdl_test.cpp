// Programmatic dependent launch (pdl.cuh) on the kernels of a decode step: a chain in the order a layer runs them,
// each kernel's input written by the slow kernel just before it (pdl_test_kernels.h), which lets it launch at once
// and writes only after a long spin. A kernel that touched its input before pdl_wait() would read the poison the
// buffers start with; one that wrote before it would be overwritten or race. The chain runs with PDL on, eagerly
// and captured in a CUDA graph, and every output must equal, bit for bit, the same chain run with PDL off (plain
// stream order; the kernels are deterministic, and their values are checked against the CPU references in their
// own tests). On devices before sm_90 PDL is a no-op and the test still checks the plain order.
#include "backend/cuda/pdl.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>

#include "backend/cpu/cpu_ops.h"
#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/kv_cache_kernels.h"
#include "backend/cuda/norm_kernels.h"
#include "backend/cuda/quant_kernels.h"
#include "backend/cuda/sampling_kernels.h"
#include "cuda_test_util.h"
#include "pdl_test_kernels.h"

namespace qed::testing {
namespace {

// ~0.1 ms at H200 clocks: far longer than a launch, so a dependent that skipped its wait would read early.
constexpr long long kSpinCycles = 200000;

constexpr int kRows = 2, kHidden = 512, kHeads = 8, kKvHeads = 2, kHeadDim = 64, kInter = 256, kVocabEmbed = 16;
constexpr int kQDim = kHeads * kHeadDim, kKvDim = kKvHeads * kHeadDim, kQkvStride = kQDim + 2 * kKvDim;
constexpr int kBlockSize = 16, kBlocks = 20, kLogitsVocab = 1000, kPartitions = 4;
constexpr int kCached[kRows] = {200, 37};

// Everything the chain reads (constant sources) and writes (poisoned before each run).
struct Chain {
  std::mt19937 rng{77};
  // sources
  cuda::DeviceBuffer table, ids_src, residual_src, norm_weight, fp8_scale, qkv_src, inv_freq, positions, slots;
  cuda::DeviceBuffer row_seq, q_start, num_new, num_cached, block_offset, block_tables, mask_offset, masks;
  cuda::DeviceBuffer cache_src, gate_up_src, logits_src, sample_params;
  cuda::DeviceBuffer merge_counters;  // zero between launches: the fused merge re-arms them
  // written by the chain
  cuda::DeviceBuffer ids, embedded, x, residual, y, y_fp8, qkv, qkv_roped, k_cache, v_cache, k_cache_fp8, v_cache_fp8;
  cuda::DeviceBuffer fused_qkv, fused_k, fused_v, attn_fused, attn_fused_fp8;
  cuda::DeviceBuffer q_in, partials, attn, attn_copy, attn_fp8, gate_up, act, act_fp8, logits, sample_work, sampled;

  Chain() {
    table = upload(to_bf16(random_bf16_values(size_t(kVocabEmbed) * kHidden, rng, 1.0f)));
    ids_src = upload(std::vector<int32_t>{5, 11});
    residual_src = upload(to_bf16(random_bf16_values(size_t(kRows) * kHidden, rng, 1.0f)));
    norm_weight = upload(to_bf16(random_bf16_values(kHidden, rng, 1.0f)));
    fp8_scale = upload(std::vector<float>{0.01f});
    qkv_src = upload(to_bf16(random_bf16_values(size_t(kRows) * kQkvStride, rng, 1.0f)));
    std::vector<float> freq(kHeadDim / 2);
    cpu::rope_inv_freq(kHeadDim, 1e6f, RopeScaling{}, freq.data());
    inv_freq = upload(freq);
    // Sequence s's blocks: 13 for the first (201 keys), 3 for the second (38), shuffled over the cache.
    std::vector<int32_t> physical(kBlocks);
    std::iota(physical.begin(), physical.end(), 0);
    std::shuffle(physical.begin(), physical.end(), rng);
    const int blocks0 = (kCached[0] + 1 + kBlockSize - 1) / kBlockSize;
    const int blocks1 = (kCached[1] + 1 + kBlockSize - 1) / kBlockSize;
    std::vector<int32_t> tables(physical.begin(), physical.begin() + blocks0 + blocks1);
    std::vector<int32_t> slot(kRows);
    slot[0] = tables[size_t(kCached[0] / kBlockSize)] * kBlockSize + kCached[0] % kBlockSize;
    slot[1] = tables[size_t(blocks0 + kCached[1] / kBlockSize)] * kBlockSize + kCached[1] % kBlockSize;
    positions = upload(std::vector<int32_t>{kCached[0], kCached[1]});
    slots = upload(slot);
    row_seq = upload(std::vector<int32_t>{0, 1});
    q_start = upload(std::vector<int32_t>{0, 1});
    num_new = upload(std::vector<int32_t>{1, 1});
    num_cached = upload(std::vector<int32_t>{kCached[0], kCached[1]});
    block_offset = upload(std::vector<int32_t>{0, blocks0});
    block_tables = upload(tables);
    mask_offset = upload(std::vector<int32_t>{-1, -1});
    masks = upload(std::vector<uint8_t>{});
    cache_src = upload(to_bf16(random_bf16_values(size_t(kBlocks) * kBlockSize * kKvDim, rng, 1.0f)));
    gate_up_src = upload(to_bf16(random_bf16_values(size_t(kRows) * 2 * kInter, rng, 2.0f)));
    logits_src = upload(random_bf16_values(size_t(kRows) * kLogitsVocab, rng, 3.0f));
    std::vector<cuda::SamplingRowParams> params(2);
    params[0].row = 0;
    params[0].temperature = 0.0f;
    params[0].logprobs = 3;
    params[1].row = 1;
    params[1].temperature = 0.8f;
    params[1].top_k = 50;
    params[1].seed = 1234;
    params[1].step = 7;
    sample_params = upload(params);
    const cuda::AttentionShape shape{kHeads, kKvHeads, kHeadDim, kBlockSize, 0.125f};
    merge_counters = upload(std::vector<uint32_t>(cuda::attention_merge_counters(kRows, shape), 0u));
    allocate();
  }

  // How a written buffer starts each run: poison (0xAB bytes; finite bf16, FP8 codes and floats), zeros (token
  // ids: a valid row, the wrong one) or the random cache contents.
  enum class Start { Poison, Zero, Cache };
  struct Written {
    const char* name;
    cuda::DeviceBuffer* buffer;
    size_t bytes;
    Start start;
    bool compared;  // scratch (partials, sampling work, the sampled rows' unwritten fields) is not
  };
  std::vector<Written> written() {
    const size_t row_bytes = size_t(kRows) * kHidden * 2, cache_bytes = size_t(kBlocks) * kBlockSize * kKvDim * 2;
    const size_t qkv_bytes = size_t(kRows) * kQkvStride * 2;
    return {
        {"ids", &ids, kRows * 4, Start::Zero, true},
        {"embedded", &embedded, row_bytes, Start::Poison, true},
        {"x", &x, row_bytes, Start::Poison, true},
        {"residual", &residual, row_bytes, Start::Poison, true},
        {"y", &y, row_bytes, Start::Poison, true},
        {"y_fp8", &y_fp8, row_bytes / 2, Start::Poison, true},
        {"qkv", &qkv, qkv_bytes, Start::Poison, true},
        {"qkv_roped", &qkv_roped, qkv_bytes, Start::Poison, true},
        {"k_cache", &k_cache, cache_bytes, Start::Cache, true},
        {"v_cache", &v_cache, cache_bytes, Start::Cache, true},
        {"k_cache_fp8", &k_cache_fp8, cache_bytes / 2, Start::Poison, true},
        {"v_cache_fp8", &v_cache_fp8, cache_bytes / 2, Start::Poison, true},
        {"fused_qkv", &fused_qkv, qkv_bytes, Start::Poison, true},
        {"fused_k", &fused_k, cache_bytes, Start::Cache, true},
        {"fused_v", &fused_v, cache_bytes, Start::Cache, true},
        {"q_in", &q_in, qkv_bytes, Start::Poison, true},
        {"partials", &partials, size_t(kRows) * kHeads * kPartitions * cuda::attention_partial_floats(kHeadDim) * 4,
         Start::Poison, false},
        {"attn", &attn, size_t(kRows) * kQDim * 2, Start::Poison, true},
        {"attn_fused", &attn_fused, size_t(kRows) * kQDim * 2, Start::Poison, true},
        {"attn_fused_fp8", &attn_fused_fp8, size_t(kRows) * kQDim, Start::Poison, true},
        {"attn_copy", &attn_copy, size_t(kRows) * kQDim * 2, Start::Poison, true},
        {"attn_fp8", &attn_fp8, size_t(kRows) * kQDim, Start::Poison, true},
        {"gate_up", &gate_up, size_t(kRows) * 2 * kInter * 2, Start::Poison, true},
        {"act", &act, size_t(kRows) * kInter * 2, Start::Poison, true},
        {"act_fp8", &act_fp8, size_t(kRows) * kInter, Start::Poison, true},
        {"logits", &logits, size_t(kRows) * kLogitsVocab * 4, Start::Poison, true},
        {"sample_work", &sample_work, size_t(2) * kLogitsVocab * 4, Start::Poison, false},
        {"sampled", &sampled, 2 * sizeof(cuda::SampledRow), Start::Poison, false},
    };
  }

  // Written buffers are allocated once: a captured graph keeps their addresses.
  void allocate() {
    for (const Written& w : written()) *w.buffer = cuda::DeviceBuffer(w.bytes);
  }

  void reset() {
    for (const Written& w : written()) {
      if (w.start == Start::Cache) {
        QED_CUDA_CHECK(cudaMemcpy(w.buffer->data(), cache_src.data(), w.bytes, cudaMemcpyDeviceToDevice));
      } else {
        QED_CUDA_CHECK(cudaMemset(w.buffer->data(), w.start == Start::Zero ? 0 : 0xAB, w.bytes));
      }
    }
    QED_CUDA_CHECK(cudaDeviceSynchronize());
  }

  void run(cudaStream_t s) {
    const size_t row_bytes = size_t(kRows) * kHidden * 2;
    slow_copy(ids_src.data(), ids.data(), kRows * 4, kSpinCycles, s);
    cuda::gather_rows_bf16(table.as<uint16_t>(), ids.as<int32_t>(), embedded.as<uint16_t>(), kRows, kHidden, s);
    slow_copy(embedded.data(), x.data(), row_bytes, kSpinCycles, s);
    slow_copy(residual_src.data(), residual.data(), row_bytes, kSpinCycles, s);
    cuda::rmsnorm_bf16(x.as<uint16_t>(), residual.as<uint16_t>(), norm_weight.as<uint16_t>(), y.as<uint16_t>(), kRows,
                       kHidden, 1e-6f, s, y_fp8.as<uint8_t>(), fp8_scale.as<float>());
    slow_copy(qkv_src.data(), qkv.data(), size_t(kRows) * kQkvStride * 2, kSpinCycles, s);
    uint16_t* q = qkv.as<uint16_t>();
    cuda::rope_bf16(q, kQkvStride, positions.as<int32_t>(), inv_freq.as<float>(), kRows, kHeads + kKvHeads, kHeadDim,
                    s);
    slow_copy(qkv.data(), qkv_roped.data(), size_t(kRows) * kQkvStride * 2, kSpinCycles, s);
    const uint16_t* roped = qkv_roped.as<uint16_t>();
    cuda::write_kv_bf16(roped + kQDim, roped + kQDim + kKvDim, kQkvStride, slots.as<int32_t>(), k_cache.as<uint16_t>(),
                        v_cache.as<uint16_t>(), kRows, kKvDim, s);
    slow_copy(qkv_src.data(), fused_qkv.data(), size_t(kRows) * kQkvStride * 2, kSpinCycles, s);
    cuda::rope_write_kv(fused_qkv.as<uint16_t>(), kQkvStride, positions.as<int32_t>(), inv_freq.as<float>(),
                        slots.as<int32_t>(), cuda::KvCacheTarget{fused_k.data(), fused_v.data(), false, 1.0f, 1.0f},
                        kRows, kHeads, kKvHeads, kHeadDim, s);
    slow_copy(qkv_roped.data(), q_in.data(), size_t(kRows) * kQkvStride * 2, kSpinCycles, s);
    cuda::write_kv_fp8(q_in.as<uint16_t>() + kQDim, q_in.as<uint16_t>() + kQDim + kKvDim, kQkvStride,
                       slots.as<int32_t>(), k_cache_fp8.as<uint8_t>(), v_cache_fp8.as<uint8_t>(), kRows, kKvDim, 0.02f,
                       0.03f, s);
    slow_copy(qkv_roped.data(), q_in.data(), size_t(kRows) * kQkvStride * 2, kSpinCycles, s);
    cuda::AttentionBatch batch;
    batch.row_seq = row_seq.as<int32_t>();
    batch.seq_q_start = q_start.as<int32_t>();
    batch.seq_num_new = num_new.as<int32_t>();
    batch.seq_num_cached = num_cached.as<int32_t>();
    batch.seq_block_offset = block_offset.as<int32_t>();
    batch.block_tables = block_tables.as<int32_t>();
    batch.seq_mask_offset = mask_offset.as<int32_t>();
    batch.masks = masks.as<uint8_t>();
    batch.rows = kRows;
    batch.max_kv_len = kCached[0] + 1;
    const cuda::AttentionShape shape{kHeads, kKvHeads, kHeadDim, kBlockSize, 0.125f};
    const cuda::KvCacheView cache{k_cache.data(), v_cache.data(), false, 1.0f, 1.0f};
    cuda::paged_attention(q_in.as<uint16_t>(), kQkvStride, cache, batch, shape, kPartitions, partials.as<float>(),
                          attn.as<uint16_t>(), s);
    // The same with the merge folded into the attention CTAs and the E4M3 output, right behind the first.
    cuda::paged_attention(q_in.as<uint16_t>(), kQkvStride, cache, batch, shape, kPartitions, partials.as<float>(),
                          attn_fused.as<uint16_t>(), s, cuda::DecodeKernel::TensorCores, attn_fused_fp8.as<uint8_t>(),
                          fp8_scale.as<float>(), merge_counters.as<uint32_t>());
    slow_copy(attn.data(), attn_copy.data(), size_t(kRows) * kQDim * 2, kSpinCycles, s);
    cuda::quantize_fp8_bf16(attn_copy.as<uint16_t>(), size_t(kRows) * kQDim, fp8_scale.as<float>(),
                            attn_fp8.as<uint8_t>(), s);
    slow_copy(gate_up_src.data(), gate_up.data(), size_t(kRows) * 2 * kInter * 2, kSpinCycles, s);
    cuda::silu_and_mul_bf16(gate_up.as<uint16_t>(), act.as<uint16_t>(), kRows, kInter, s, act_fp8.as<uint8_t>(),
                            fp8_scale.as<float>());
    slow_copy(logits_src.data(), logits.data(), size_t(kRows) * kLogitsVocab * 4, kSpinCycles, s);
    cuda::sample_rows(logits.as<float>(), 2, kLogitsVocab, sample_params.as<cuda::SamplingRowParams>(),
                      sample_work.as<float>(), sampled.as<cuda::SampledRow>(), s);
  }

  // Every compared buffer the chain writes, by name, as bytes; then the fields of the sampled rows that
  // sample_rows writes for these parameters.
  std::vector<std::pair<std::string, std::vector<uint8_t>>> outputs() {
    std::vector<std::pair<std::string, std::vector<uint8_t>>> all;
    for (const Written& w : written()) {
      if (w.compared) all.emplace_back(w.name, download<uint8_t>(*w.buffer, w.bytes));
    }
    const auto rows = download<cuda::SampledRow>(sampled, 2);
    std::vector<uint8_t> fields;
    auto add = [&](const void* p, size_t n) {
      const auto* bytes = static_cast<const uint8_t*>(p);
      fields.insert(fields.end(), bytes, bytes + n);
    };
    add(&rows[0].token, 4);
    add(&rows[0].logprob, 4);
    add(rows[0].top_tokens, 3 * 4);
    add(rows[0].top_logprobs, 3 * 4);
    add(&rows[1].token, 4);
    all.emplace_back("sampled", fields);
    return all;
  }
};

// Restores the process-wide PDL switch (tests elsewhere run with it off).
struct PdlSwitch {
  bool before = cuda::pdl_enabled();
  explicit PdlSwitch(bool on) { cuda::set_pdl_enabled(on); }
  ~PdlSwitch() { cuda::set_pdl_enabled(before); }
};

using Outputs = std::vector<std::pair<std::string, std::vector<uint8_t>>>;

void expect_same(const Outputs& got, const Outputs& want, const char* how) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const std::vector<uint8_t>& g = got[i].second;
    const std::vector<uint8_t>& w = want[i].second;
    ASSERT_EQ(g.size(), w.size());
    const size_t first = size_t(std::mismatch(g.begin(), g.end(), w.begin()).first - g.begin());
    EXPECT_EQ(first, g.size()) << how << ": " << got[i].first << " differs from the PDL-off run at byte " << first;
  }
}

// The poison still in a buffer the plain chain should have written: the test would compare nothing.
bool still_poison(const Outputs& outputs, const std::string& name) {
  for (const auto& [n, bytes] : outputs) {
    if (n == name) return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0xAB; });
  }
  return true;
}

using PdlChain = CudaTest;

TEST_F(PdlChain, DecodeKernelsWaitForTheirInputsEagerlyAndInAGraph) {
  Chain chain;
  cudaStream_t stream = nullptr;
  QED_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Outputs plain;
  {
    PdlSwitch off(false);
    chain.reset();
    chain.run(stream);
    QED_CUDA_CHECK(cudaStreamSynchronize(stream));
    plain = chain.outputs();
  }
  // Sanity: the plain chain overwrote the poison of what the chain ends with.
  for (const char* name : {"attn", "attn_fused", "attn_fused_fp8", "attn_fp8", "act_fp8", "fused_qkv", "sampled"}) {
    ASSERT_FALSE(still_poison(plain, name)) << name;
  }
  PdlSwitch on(true);
  for (int repeat = 0; repeat < 3; ++repeat) {
    chain.reset();
    chain.run(stream);
    QED_CUDA_CHECK(cudaStreamSynchronize(stream));
    expect_same(chain.outputs(), plain, "eager");
  }
  cudaGraph_t graph = nullptr;
  QED_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  chain.run(stream);
  QED_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  QED_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int repeat = 0; repeat < 3; ++repeat) {
    chain.reset();
    QED_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    QED_CUDA_CHECK(cudaStreamSynchronize(stream));
    expect_same(chain.outputs(), plain, "graph");
  }
  QED_CUDA_CHECK(cudaGraphExecDestroy(exec));
  QED_CUDA_CHECK(cudaGraphDestroy(graph));
  QED_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace qed::testing
