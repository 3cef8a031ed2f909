// The streaming writer of qed quantize: tensors quantized chunk by chunk from the mmap and pwritten into place by
// several threads, optionally over several shards. Its reference is the whole-tensor path it replaced: the CPU
// reference ops on an fp32 copy of the full tensor, one model.safetensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "../model/temp_dir.h"
#include "backend/cpu/quant_ops.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/mmap_file.h"
#include "model/safetensors.h"
#include "quant/calibration.h"
#include "quant/quantized_checkpoint.h"
#include "quant/weight_quantizer.h"

namespace qed {
namespace {

namespace fs = std::filesystem;

const std::string kFixture = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/qwen2_gqa_bias";

// A bf16 weight large enough to span several 1M-element chunks, with rows of very different magnitude (so per-row
// and per-tensor scales differ) and its fp32 values.
struct Bf16Weight {
  std::vector<uint16_t> bits;
  std::vector<float> values;
  TensorInfo info;
  Bf16Weight(int rows, int cols) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int r = 0; r < rows; ++r) {
      const float row_scale = std::ldexp(1.0f, r % 9 - 4);
      for (int c = 0; c < cols; ++c) bits.push_back(float_to_bf16(normal(rng) * row_scale));
    }
    for (uint16_t b : bits) values.push_back(bf16_to_float(b));
    info.name = "w";
    info.dtype = DType::BF16;
    info.shape = {rows, cols};
    info.nbytes = bits.size() * 2;
    info.data = reinterpret_cast<const unsigned char*>(bits.data());
  }
};

template <typename Code>
std::vector<Code> collect(size_t n, const std::function<std::vector<float>(const quant::CodeSink&)>& run,
                          std::vector<float>& scales) {
  std::vector<Code> codes(n);
  std::vector<bool> written(n, false);
  scales = run([&](size_t offset, const void* data, size_t bytes) {
    ASSERT_LE(offset + bytes, n * sizeof(Code));
    std::memcpy(reinterpret_cast<char*>(codes.data()) + offset, data, bytes);
    for (size_t i = offset / sizeof(Code); i < (offset + bytes) / sizeof(Code); ++i) {
      EXPECT_FALSE(written[i]) << "code " << i << " written twice";
      written[i] = true;
    }
  });
  for (size_t i = 0; i < n; ++i) EXPECT_TRUE(written[i]) << "code " << i << " never written";
  return codes;
}

constexpr int kRows = 1100, kCols = 2000;  // 2.2M elements: three chunks

TEST(WeightQuantizer, StreamedFp8PerTensorEqualsTheWholeTensorReference) {
  const Bf16Weight w(kRows, kCols);
  std::vector<float> scales;
  const auto codes = collect<uint8_t>(
      w.values.size(), [&](const quant::CodeSink& s) { return quant::quantize_fp8_streamed(w.info, false, s); },
      scales);
  ASSERT_EQ(scales.size(), 1u);
  EXPECT_EQ(scales[0], cpu::fp8_scale_for_amax(cpu::amax(w.values.data(), w.values.size())));
  std::vector<uint8_t> expected(w.values.size());
  cpu::quantize_fp8_per_tensor(w.values.data(), w.values.size(), scales[0], expected.data());
  EXPECT_TRUE(codes == expected);
}

TEST(WeightQuantizer, StreamedFp8PerChannelEqualsTheWholeTensorReference) {
  const Bf16Weight w(kRows, kCols);
  std::vector<float> scales;
  const auto codes = collect<uint8_t>(
      w.values.size(), [&](const quant::CodeSink& s) { return quant::quantize_fp8_streamed(w.info, true, s); }, scales);
  ASSERT_EQ(scales.size(), size_t(kRows));
  for (int r = 0; r < kRows; ++r)
    ASSERT_EQ(scales[size_t(r)], cpu::fp8_scale_for_amax(cpu::amax(&w.values[size_t(r) * kCols], kCols))) << r;
  std::vector<uint8_t> expected(w.values.size());
  cpu::quantize_fp8_per_channel(w.values.data(), kRows, kCols, scales.data(), expected.data());
  EXPECT_TRUE(codes == expected);
  EXPECT_NE(scales.front(), scales[1]);  // the rows' magnitudes differ: a per-tensor scale would be wrong
}

TEST(WeightQuantizer, StreamedInt8EqualsTheWholeTensorReference) {
  const Bf16Weight w(kRows, kCols);
  std::vector<float> scales;
  const auto codes = collect<int8_t>(
      w.values.size(), [&](const quant::CodeSink& s) { return quant::quantize_int8_streamed(w.info, s); }, scales);
  std::vector<float> expected_scales(kRows);
  std::vector<int8_t> expected(w.values.size());
  cpu::quantize_int8_per_channel(w.values.data(), kRows, kCols, expected_scales.data(), expected.data());
  EXPECT_TRUE(scales == expected_scales);
  EXPECT_TRUE(codes == expected);
}

TEST(WeightQuantizer, NonFiniteWeightIsRefusedByName) {
  Bf16Weight w(4, 8);
  w.bits[13] = 0x7F80;  // +inf
  for (bool per_channel : {false, true}) {
    try {
      quant::quantize_fp8_streamed(w.info, per_channel, [](size_t, const void*, size_t) {});
      FAIL() << "an infinite weight was quantized";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("w: weight has a non-finite value"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(quant::quantize_int8_streamed(w.info, [](size_t, const void*, size_t) {}), Error);
}

// Small deterministic calibration: the writer only needs numbers in the stats.
quant::CalibrationStats fixture_stats() {
  quant::CalibrationStats stats;
  stats.layers.resize(2);
  for (size_t l = 0; l < 2; ++l) stats.layers[l] = {1.5f + l, 2.5f, 3.5f, 4.5f + l, 5.5f, 6.5f};
  stats.samples = 1;
  stats.tokens = 1;
  return stats;
}

std::string write(const std::string& out, size_t max_shard_bytes, int threads) {
  quant::QuantizeOptions options;
  options.kv_cache_fp8 = true;
  options.max_shard_bytes = max_shard_bytes;
  options.threads = threads;
  const quant::CalibrationStats stats = fixture_stats();
  quant::write_quantized_checkpoint(kFixture, out, options, &stats);
  return out;
}

std::vector<std::string> safetensors_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".safetensors") != std::string::npos) files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  return files;
}

void expect_same_tensors(const std::string& a_dir, const std::string& b_dir) {
  const Checkpoint a = Checkpoint::open(a_dir), b = Checkpoint::open(b_dir);
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& name : a.names()) {
    const TensorInfo &x = a.get(name), &y = b.get(name);
    EXPECT_EQ(x.dtype, y.dtype) << name;
    EXPECT_EQ(x.shape, y.shape) << name;
    ASSERT_EQ(x.nbytes, y.nbytes) << name;
    EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0) << name;
  }
}

TEST(QuantizedShards, ShardedOutputHoldsTheTensorsOfTheSingleFile) {
  test::TempDir dir;
  const std::string one = write(dir.file("one"), size_t(1) << 40, 2);
  const std::string many = write(dir.file("many"), 40000, 2);  // the fixture is ~220 kB: several shards
  EXPECT_EQ(safetensors_files(one), std::vector<std::string>{"model.safetensors"});
  const auto shards = safetensors_files(many);
  ASSERT_GE(shards.size(), 4u);  // 4+ shards and the index
  const std::regex name(R"(model-0000\d-of-0000\d\.safetensors|model\.safetensors\.index\.json)");
  for (const std::string& s : shards) EXPECT_TRUE(std::regex_match(s, name)) << s;
  expect_same_tensors(one, many);
}

TEST(QuantizedShards, ThreadCountDoesNotChangeABit) {
  test::TempDir dir;
  const std::string a = write(dir.file("a"), size_t(1) << 40, 1);
  const std::string b = write(dir.file("b"), size_t(1) << 40, 7);
  const MmapFile x(a + "/model.safetensors"), y(b + "/model.safetensors");
  ASSERT_EQ(x.size(), y.size());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0);
}

TEST(QuantizedShards, ARunReplacesWhatAnEarlierRunWrote) {
  test::TempDir dir;
  const std::string out = dir.file("out");
  write(out, 40000, 2);
  write(out, size_t(1) << 40, 2);  // one file now: the old shards and index must not linger beside it
  EXPECT_EQ(safetensors_files(out), std::vector<std::string>{"model.safetensors"});
  write(out, 40000, 2);  // and back: a stale model.safetensors would shadow the index
  const auto files = safetensors_files(out);
  EXPECT_EQ(std::count(files.begin(), files.end(), "model.safetensors"), 0);
  EXPECT_EQ(std::count(files.begin(), files.end(), "model.safetensors.index.json"), 1);
  test::TempDir reference;
  expect_same_tensors(write(reference.file("one"), size_t(1) << 40, 1), out);
}

TEST(QuantizedShards, AFailedRunLeavesNoFilesBehind) {
  test::TempDir dir;
  // A calibration with a layer missing is refused before anything is written; a weight error mid-run (below)
  // removes the temporaries.
  quant::CalibrationStats short_stats = fixture_stats();
  short_stats.layers.pop_back();
  quant::QuantizeOptions options;
  EXPECT_THROW(quant::write_quantized_checkpoint(kFixture, dir.file("a"), options, &short_stats), Error);
  EXPECT_FALSE(fs::exists(dir.file("a")));

  // The fixture with one weight set to NaN: the job fails on a worker thread and the error reaches the caller.
  const std::string broken = dir.file("broken");
  fs::create_directories(broken);
  for (const char* f : {"config.json"}) fs::copy_file(kFixture + "/" + f, broken + "/" + f);
  {
    const Checkpoint source = Checkpoint::open(kFixture);
    std::vector<std::vector<uint8_t>> copies;
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : source.names()) {
      const TensorInfo& t = source.get(name);
      copies.emplace_back(t.data, t.data + t.nbytes);
      if (name == "model.layers.1.mlp.down_proj.weight") {
        ASSERT_EQ(t.dtype, DType::BF16);
        copies.back()[6] = 0xC0;  // bf16 0x7FC0 at element 3: NaN
        copies.back()[7] = 0x7F;
      }
      tensors.push_back({name, t.dtype, t.shape, copies.back().data()});
    }
    write_safetensors(broken + "/model.safetensors", tensors);
  }
  const quant::CalibrationStats stats = fixture_stats();
  options.threads = 3;
  try {
    quant::write_quantized_checkpoint(broken, dir.file("out"), options, &stats);
    FAIL() << "a NaN weight was quantized";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.down_proj.weight: weight has a non-finite value"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(safetensors_files(dir.file("out")).empty());
}

TEST(QuantizedShards, ProgressCountsEverySourceTensorOnce) {
  test::TempDir dir;
  quant::QuantizeOptions options;
  options.threads = 3;
  std::vector<quant::WriteProgress> seen;
  options.progress = [&](const quant::WriteProgress& p) { seen.push_back(p); };
  const quant::CalibrationStats stats = fixture_stats();
  quant::write_quantized_checkpoint(kFixture, dir.file("out"), options, &stats);
  const Checkpoint source = Checkpoint::open(kFixture);
  size_t bytes = 0;
  for (const std::string& name : source.names()) bytes += source.get(name).nbytes;
  ASSERT_EQ(seen.size(), source.names().size());
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].tensors_done, int(i) + 1);
    EXPECT_EQ(seen[i].tensors_total, int(seen.size()));
    EXPECT_EQ(seen[i].bytes_total, bytes);
  }
  EXPECT_EQ(seen.back().bytes_done, bytes);
}

}  // namespace
}  // namespace qed
