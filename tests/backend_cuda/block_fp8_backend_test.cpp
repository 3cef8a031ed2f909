// Block-wise FP8 checkpoints (transformers' FineGrainedFP8Config layout) on the CUDA backend, which has no
// block-scaled GEMM: it requantizes each output row to its largest block scale and runs per-channel FP8 with
// dynamic per-tensor activations (docs/quantize.md "Block-wise FP8"). The fixture qwen2_gqa_bias in blocks of
// 48 × 32 (partial output blocks) by the test helper, and the same approximation written out as a per-channel
// checkpoint (tests/quant/block_fp8_checkpoint.h).
//
// Checks: (1) the CUDA backend computes exactly its documented approximation: its logits on the block checkpoint
// equal its logits on the per-channel checkpoint bit for bit (same codes, scales and GEMM path). (2) CUDA vs the
// CPU on the per-channel checkpoint: the FP8 parity bound of quantized_backend_test.cpp (10% of the logit scale,
// or twice the CPU's own FP8-vs-bf16 difference; bf16 vs fp32 activations moving E4M3 codes a step). (3) CUDA vs
// the CPU's exact block-wise computation: that bound plus the approximation's own effect, measured on the CPU
// (max |CPU per-channel - CPU block|), so a CUDA error beyond the two shows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "../model/temp_dir.h"
#include "../quant/block_fp8_checkpoint.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device.h"
#include "backend_test_util.h"
#include "hf_fixture.h"

namespace qed::testing {
namespace {

const std::string kFixtureName = "qwen2_gqa_bias";

class BlockFp8Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<cuda::DeviceInfo> devices = cuda::list_devices();
    if (devices.empty()) GTEST_SKIP() << "no CUDA device";
    if (devices[0].sm_major * 10 + devices[0].sm_minor < 89) GTEST_SKIP() << "FP8 GEMMs need sm_89 or newer";
    fixture_ = load_hf_fixture(kFixtureName);
    block_ = tmp_.file("block");
    channel_ = tmp_.file("channel");
    test::write_block_fp8_checkpoint(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + kFixtureName, block_, 48,
                                     32);
    test::write_channel_requantized_checkpoint(block_, channel_);
  }
  static std::unique_ptr<CpuBackend> cpu(const std::string& dir) {
    CpuBackendOptions options;
    options.num_threads = 2;
    options.num_blocks = 64;
    return CpuBackend::load(dir, options);
  }
  static std::unique_ptr<CudaBackend> gpu(const std::string& dir) {
    CudaBackendOptions options;
    options.num_blocks = 64;
    options.max_batched_tokens = 1024;
    return CudaBackend::load(dir, options);
  }
  test::TempDir tmp_;
  std::string block_, channel_;
  HfFixture fixture_;
};

TEST_F(BlockFp8Cuda, RunsExactlyItsPerChannelApproximationWithinTheFp8ParityBound) {
  std::unique_ptr<CudaBackend> cuda_block = gpu(block_), cuda_channel = gpu(channel_);
  std::unique_ptr<CpuBackend> cpu_block = cpu(block_), cpu_channel = cpu(channel_);
  std::unique_ptr<CpuBackend> bf16 = load_fixture_backend(kFixtureName);
  for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
    const std::vector<int32_t>& ids = fixture_.prompts[p].ids;
    const std::vector<float> got = prefill_logits(*cuda_block, ids);
    EXPECT_EQ(got, prefill_logits(*cuda_channel, ids)) << "prompt " << p;
    const std::vector<float> approx = prefill_logits(*cpu_channel, ids);
    const std::vector<float> exact = prefill_logits(*cpu_block, ids);
    const std::vector<float> unquantized = prefill_logits(*bf16, ids);
    ASSERT_EQ(got.size(), approx.size());
    const float scale = std::max(1.0f, max_abs(approx));
    const float parity_bound = std::max(0.10f * scale, 2.0f * max_abs_diff(approx, unquantized));
    const float approximation = max_abs_diff(approx, exact);
    const float vs_channel = max_abs_diff(got, approx), vs_exact = max_abs_diff(got, exact);
    std::printf(
        "[ block fp8 ] prompt %zu (%zu tokens): CUDA vs CPU per-channel %.3g (bound %.3g); CPU per-channel vs CPU "
        "block %.3g; CUDA vs CPU block %.3g (bound %.3g); scale %.3g\n",
        p, ids.size(), double(vs_channel), double(parity_bound), double(approximation), double(vs_exact),
        double(parity_bound + approximation), double(scale));
    EXPECT_LE(vs_channel, parity_bound) << "prompt " << p;
    EXPECT_LE(vs_exact, parity_bound + approximation) << "prompt " << p;
  }
}

}  // namespace
}  // namespace qed::testing
