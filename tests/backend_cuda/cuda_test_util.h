#pragma once
// Shared plumbing of the CUDA kernel tests: skip without a GPU, random bf16 data, device upload/download, and a
// comparison that names the first element out of tolerance with both values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/device.h"
#include "core/dtype.h"

namespace qed::testing {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  }
};

// Values rounded to bf16 (so the CPU reference sees exactly what the kernel reads), returned as floats.
inline std::vector<float> random_bf16_values(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_float(float_to_bf16(dist(rng)));
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

inline std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

template <typename T>
cuda::DeviceBuffer upload(const std::vector<T>& host) {
  cuda::DeviceBuffer buffer(std::max<size_t>(host.size() * sizeof(T), 1));
  if (!host.empty()) buffer.upload(host.data(), host.size() * sizeof(T));
  return buffer;
}

// A device buffer of n bf16 NaNs: every element the kernel should write must be written.
inline cuda::DeviceBuffer poisoned_bf16(size_t n) {
  return upload(std::vector<uint16_t>(n, 0x7FC1));
}

template <typename T>
std::vector<T> download(const cuda::DeviceBuffer& buffer, size_t n) {
  std::vector<T> host(n);
  if (n > 0) buffer.download(host.data(), n * sizeof(T));
  return host;
}

// |got - want| <= relative * |want| + absolute for every element; the first failure is reported with its index.
inline ::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<float>& want,
                                            float relative, float absolute, const std::string& what) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << what << ": size " << got.size() << " vs " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const float tolerance = relative * std::fabs(want[i]) + absolute;
    if (!(std::fabs(got[i] - want[i]) <= tolerance)) {  // NaN fails
      return ::testing::AssertionFailure() << what << ": element " << i << " got " << got[i] << " want " << want[i]
                                           << " (tolerance " << tolerance << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Half a bf16 ulp relative to the value: the error of one correct rounding of an exact fp32 result.
constexpr float kBf16HalfUlp = 1.0f / 256.0f;

}  // namespace qed::testing
