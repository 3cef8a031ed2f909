// Checkpoint::open: a model directory with model.safetensors or a sharded index; every way it can be broken
// gives one error that names the directory, file or tensor at fault.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "core/error.h"
#include "model/safetensors.h"
#include "temp_dir.h"

namespace qed {
namespace {

std::string open_error(const std::string& dir) {
  try {
    Checkpoint::open(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

// Two shards: layer 0 in the first, layer 1 and the norm in the second.
class ShardedCheckpoint : public testing::Test {
 protected:
  void SetUp() override {
    write_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"layers.0.w", DType::F32, {2, 2}, first}});
    write_safetensors(dir.file("model-00002-of-00002.safetensors"),
                      {{"layers.1.w", DType::F32, {2, 2}, second}, {"norm", DType::F32, {2}, norm}});
  }
  void write_index(const std::string& weight_map) const {
    dir.write("model.safetensors.index.json", R"({"metadata":{"total_size":40},"weight_map":)" + weight_map + "}");
  }
  static constexpr const char* kFullMap =
      R"({"layers.0.w":"model-00001-of-00002.safetensors","layers.1.w":"model-00002-of-00002.safetensors",)"
      R"("norm":"model-00002-of-00002.safetensors"})";

  test::TempDir dir;
  float first[4] = {1, 2, 3, 4};
  float second[4] = {5, 6, 7, 8};
  float norm[2] = {9, 10};
};

TEST(Checkpoint, OpensSingleFile) {
  test::TempDir dir;
  uint16_t weights[3] = {float_to_bf16(1.0f), float_to_bf16(2.0f), float_to_bf16(3.0f)};
  write_safetensors(dir.file("model.safetensors"), {{"embed", DType::BF16, {3, 1}, weights}});
  Checkpoint checkpoint = Checkpoint::open(dir.path());
  EXPECT_EQ(checkpoint.dir(), dir.path());
  EXPECT_EQ(checkpoint.names(), std::vector<std::string>{"embed"});
  EXPECT_EQ(checkpoint.get("embed").at(2), 3.0f);
  EXPECT_EQ(checkpoint.find("missing"), nullptr);
}

TEST(Checkpoint, MissingDirectoryIsNamed) {
  test::TempDir dir;
  EXPECT_EQ(open_error(dir.file("nope")), dir.file("nope") + ": no such directory");
}

TEST(Checkpoint, FileInsteadOfDirectoryIsNamed) {
  test::TempDir dir;
  std::string file = dir.write("config.json", "{}");
  EXPECT_EQ(open_error(file), file + ": not a directory");
}

TEST(Checkpoint, EmptyDirectoryNamesWhatWasLookedFor) {
  test::TempDir dir;
  std::string message = open_error(dir.path());
  EXPECT_TRUE(contains(message, dir.path() + ": "));
  EXPECT_TRUE(contains(message, "model.safetensors and model.safetensors.index.json"));
  EXPECT_EQ(message.find('\n'), std::string::npos);
}

TEST(Checkpoint, BrokenFileErrorNamesTheFile) {
  test::TempDir dir;
  std::string path = dir.write("model.safetensors", "garbage");
  EXPECT_TRUE(contains(open_error(dir.path()), path + ": too small"));
}

TEST(Checkpoint, GetUnknownTensorNamesTensorAndDirectory) {
  test::TempDir dir;
  float value = 1.0f;
  write_safetensors(dir.file("model.safetensors"), {{"w", DType::F32, {1}, &value}});
  Checkpoint checkpoint = Checkpoint::open(dir.path());
  try {
    checkpoint.get("lm_head.weight");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), dir.path() + ": tensor 'lm_head.weight' not found in checkpoint");
  }
}

TEST_F(ShardedCheckpoint, OpensEveryTensorOfEveryShard) {
  write_index(kFullMap);
  Checkpoint checkpoint = Checkpoint::open(dir.path());
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"layers.0.w", "layers.1.w", "norm"}));
  EXPECT_EQ(checkpoint.get("layers.0.w").at(3), 4.0f);
  EXPECT_EQ(checkpoint.get("layers.1.w").at(0), 5.0f);
  EXPECT_EQ(checkpoint.get("norm").at(1), 10.0f);
  EXPECT_EQ(checkpoint.get("norm").shape, std::vector<int64_t>{2});
}

TEST_F(ShardedCheckpoint, TensorsOfAListedShardLoadEvenIfTheMapOmitsThem) {
  // As transformers does: it loads whole shards, the weight_map only says which shards exist.
  write_index(R"({"layers.1.w":"model-00002-of-00002.safetensors"})");
  Checkpoint checkpoint = Checkpoint::open(dir.path());
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"layers.1.w", "norm"}));
  EXPECT_EQ(checkpoint.get("norm").at(0), 9.0f);
}

TEST_F(ShardedCheckpoint, SingleFileWinsOverIndexLikeTransformers) {
  write_index(kFullMap);
  float value = 42.0f;
  write_safetensors(dir.file("model.safetensors"), {{"only", DType::F32, {1}, &value}});
  EXPECT_EQ(Checkpoint::open(dir.path()).names(), std::vector<std::string>{"only"});
}

TEST_F(ShardedCheckpoint, MissingShardNamesShardAndIndex) {
  write_index(R"({"layers.0.w":"model-00001-of-00002.safetensors","x":"model-00003-of-00003.safetensors"})");
  std::string message = open_error(dir.path());
  EXPECT_TRUE(contains(message, dir.file("model.safetensors.index.json") + ": "));
  EXPECT_TRUE(contains(message, "shard 'model-00003-of-00003.safetensors' listed in the index is missing"));
}

TEST_F(ShardedCheckpoint, TensorAbsentFromItsShardIsNamed) {
  write_index(R"({"layers.0.w":"model-00002-of-00002.safetensors"})");
  EXPECT_TRUE(contains(open_error(dir.path()),
                       "tensor 'layers.0.w' is listed for shard 'model-00002-of-00002.safetensors' but that shard "
                       "does not contain it"));
}

TEST_F(ShardedCheckpoint, IndexThatIsNotJsonIsNamed) {
  dir.write("model.safetensors.index.json", "{weight_map");
  EXPECT_TRUE(contains(open_error(dir.path()), dir.file("model.safetensors.index.json") + ": not valid JSON"));
}

TEST_F(ShardedCheckpoint, IndexWithoutWeightMapIsNamed) {
  dir.write("model.safetensors.index.json", R"({"metadata":{}})");
  EXPECT_TRUE(contains(open_error(dir.path()), "missing 'weight_map'"));
}

TEST_F(ShardedCheckpoint, ShardPathOutsideTheDirectoryIsRefused) {
  write_index(R"({"layers.0.w":"../model-00001-of-00002.safetensors"})");
  EXPECT_TRUE(contains(open_error(dir.path()), "is not a file name in the directory"));
}

TEST_F(ShardedCheckpoint, BrokenShardErrorNamesTheShard) {
  std::string shard = dir.write("model-00002-of-00002.safetensors", std::string(8, '\xff'));
  write_index(kFullMap);
  EXPECT_TRUE(contains(open_error(dir.path()), shard + ": header length"));
}

}  // namespace
}  // namespace qed
