// Block-wise FP8 checkpoints (transformers' FineGrainedFP8Config layout) on the CUDA backend, which has no
// block-scaled GEMM: it dequantizes each weight exactly (q · weight_scale_inv of its block, fp32, rounded once to
// bf16) and runs the layer as bf16 with unquantized activations (docs/quantize.md "Block-wise FP8"). The fixture
// qwen2_gqa_bias in blocks of 48 × 32 (partial output blocks) by the test helper, and the same choice written out as
// a bf16 checkpoint (tests/quant/block_fp8_checkpoint.h).
//
// Checks: (1) the CUDA backend computes exactly its documented choice: its logits on the block checkpoint equal its
// logits on the dequantized bf16 checkpoint bit for bit (same bf16 weights, same GEMM path). (2) CUDA vs the CPU on
// the dequantized checkpoint: the bf16 parity bound of cuda_backend_test.cpp (5% of the logit scale). (3) CUDA vs
// the CPU's exact block-wise computation: that bound plus the choice's own effect, skipping the activations'
// per-token-group quantization, measured on the CPU (max |CPU dequantized - CPU block|), so a CUDA error beyond
// the two shows.
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
    fixture_ = load_hf_fixture(kFixtureName);
    block_ = tmp_.file("block");
    dequantized_ = tmp_.file("dequantized");
    test::write_block_fp8_checkpoint(std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + kFixtureName, block_, 48,
                                     32);
    test::write_dequantized_bf16_checkpoint(block_, dequantized_);
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
  std::string block_, dequantized_;
  HfFixture fixture_;
};

TEST_F(BlockFp8Cuda, RunsExactlyItsDequantizedBf16ChoiceWithinTheBf16ParityBound) {
  std::unique_ptr<CudaBackend> cuda_block = gpu(block_), cuda_dequantized = gpu(dequantized_);
  std::unique_ptr<CpuBackend> cpu_block = cpu(block_), cpu_dequantized = cpu(dequantized_);
  for (size_t p = 0; p < fixture_.prompts.size(); ++p) {
    const std::vector<int32_t>& ids = fixture_.prompts[p].ids;
    const std::vector<float> got = prefill_logits(*cuda_block, ids);
    EXPECT_EQ(got, prefill_logits(*cuda_dequantized, ids)) << "prompt " << p;
    const std::vector<float> choice = prefill_logits(*cpu_dequantized, ids);
    const std::vector<float> exact = prefill_logits(*cpu_block, ids);
    ASSERT_EQ(got.size(), choice.size());
    const float scale = std::max(1.0f, max_abs(choice));
    const float parity_bound = 0.05f * scale;
    const float unquantized_inputs = max_abs_diff(choice, exact);
    const float vs_choice = max_abs_diff(got, choice), vs_exact = max_abs_diff(got, exact);
    std::printf(
        "[ block fp8 ] prompt %zu (%zu tokens): CUDA vs CPU dequantized-bf16 %.3g (bound %.3g); CPU dequantized vs "
        "CPU block %.3g; CUDA vs CPU block %.3g (bound %.3g); scale %.3g\n",
        p, ids.size(), double(vs_choice), double(parity_bound), double(unquantized_inputs), double(vs_exact),
        double(parity_bound + unquantized_inputs), double(scale));
    EXPECT_LE(vs_choice, parity_bound) << "prompt " << p;
    EXPECT_LE(vs_exact, parity_bound + unquantized_inputs) << "prompt " << p;
  }
}

}  // namespace
}  // namespace qed::testing
