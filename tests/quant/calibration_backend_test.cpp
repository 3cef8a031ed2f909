// calibrate_model: the backend choice of qed quantize --backend, on a fixture with the CPU backend (the CUDA one is
// compared with it in tests/backend_cuda/cuda_calibration_test.cpp).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "quant/calibration.h"

namespace qed {
namespace {

const std::string kFixture = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_gqa_bias";

std::vector<std::vector<int32_t>> samples() {
  return {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, {400, 300, 200}, {7, 77, 177, 277}};
}

TEST(CalibrationBackend, CpuKindEqualsCalibratingTheCpuBackendDirectly) {
  CpuBackendOptions options;
  options.num_threads = 1;
  options.num_blocks = 2;
  CpuBackend backend(ModelConfig::from_file(kFixture + "/config.json"), Checkpoint::open(kFixture), options);
  const quant::CalibrationStats want = quant::calibrate(backend, samples());
  int calls = 0;
  const quant::CalibrationStats got =
      quant::calibrate_model(kFixture, samples(), {"cpu", 1, 0}, [&](int done, int total, int64_t tokens) {
        ++calls;
        EXPECT_EQ(done, calls);
        EXPECT_EQ(total, 3);
        EXPECT_GT(tokens, 0);
      });
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(got.samples, 3);
  EXPECT_EQ(got.tokens, 24);
  ASSERT_EQ(got.layers.size(), want.layers.size());
  for (size_t l = 0; l < want.layers.size(); ++l) {
    EXPECT_EQ(got.layers[l].qkv_input, want.layers[l].qkv_input);
    EXPECT_EQ(got.layers[l].o_input, want.layers[l].o_input);
    EXPECT_EQ(got.layers[l].gate_up_input, want.layers[l].gate_up_input);
    EXPECT_EQ(got.layers[l].down_input, want.layers[l].down_input);
    EXPECT_EQ(got.layers[l].k, want.layers[l].k);
    EXPECT_EQ(got.layers[l].v, want.layers[l].v);
    EXPECT_GT(got.layers[l].k, 0.0f);
  }
}

TEST(CalibrationBackend, DefaultIsCudaOrCpuAndUnknownKindsAreRefused) {
  const std::string kind = quant::default_calibration_backend();
  EXPECT_TRUE(kind == "cpu" || kind == "cuda") << kind;
  try {
    quant::calibrate_model(kFixture, samples(), {"tpu", 1, 0});
    FAIL() << "an unknown backend was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "--backend must be cpu or cuda, got 'tpu'");
  }
}

}  // namespace
}  // namespace qed
