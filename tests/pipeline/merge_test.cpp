#include "pipeline/merge.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "temp_dir.h"

namespace qed::pipeline {
namespace {

using testing::read_file;
using testing::TempDir;

TEST(MergeJsonl, KeepsFirstRowPerKeyInShardOrder) {
  TempDir dir;
  const auto a = dir.write("a.jsonl", "{\"id\": 1, \"v\": \"a1\"}\n{\"id\": 2, \"v\": \"a2\"}\n");
  // Shard b was requeued after writing id 3: it wrote it again, then id 4.
  const auto b = dir.write("b.jsonl", "{\"id\": 3, \"v\": \"b3\"}\n{\"id\": 3, \"v\": \"b3-again\"}\n{\"id\": 4}\n");
  const auto stats = merge_jsonl({a, b}, "id", dir / "out.jsonl");
  EXPECT_EQ(stats.rows, 4u);
  EXPECT_EQ(stats.duplicates, 1u);
  EXPECT_EQ(read_file(dir / "out.jsonl"),
            "{\"id\": 1, \"v\": \"a1\"}\n{\"id\": 2, \"v\": \"a2\"}\n{\"id\": 3, \"v\": \"b3\"}\n{\"id\": 4}\n");
}

TEST(MergeJsonl, KeysOfDifferentTypesAreDifferentRows) {
  TempDir dir;
  const auto a = dir.write("a.jsonl", "{\"id\": 1}\n{\"id\": \"1\"}\n");
  EXPECT_EQ(merge_jsonl({a}, "id", dir / "out.jsonl").rows, 2u);
}

TEST(MergeJsonl, DropsTheUnterminatedLastLineAKilledWriterLeaves) {
  TempDir dir;
  const auto a = dir.write("a.jsonl", "{\"id\": 1}\n{\"id\": 2, \"text\": \"cut of");
  const auto stats = merge_jsonl({a}, "id", dir / "out.jsonl");
  EXPECT_EQ(stats.rows, 1u);
  EXPECT_EQ(stats.truncated, 1u);
}

TEST(MergeJsonl, CorruptRowInTheMiddleFailsWithFileAndLine) {
  TempDir dir;
  const auto a = dir.write("a.jsonl", "{\"id\": 1}\nnot json\n{\"id\": 2}\n");
  try {
    merge_jsonl({a}, "id", dir / "out.jsonl");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.jsonl:2: not a JSON object"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "out.jsonl"));
}

TEST(MergeJsonl, RowsWithoutTheKeyAreDeduplicatedByText) {
  TempDir dir;
  const auto a = dir.write("a.jsonl", "{\"x\": 1}\n{\"x\": 1}\n{\"x\": 2}\n");
  const auto stats = merge_jsonl({a}, "id", dir / "out.jsonl");
  EXPECT_EQ(stats.rows, 2u);
  EXPECT_EQ(stats.duplicates, 1u);
}

TEST(MergeJsonl, MissingShardCountsAsEmpty) {
  TempDir dir;
  const auto a = dir.write("a.jsonl", "{\"id\": 1}\n");
  const auto stats = merge_jsonl({a, dir / "never-written.jsonl"}, "id", dir / "sub" / "out.jsonl");
  EXPECT_EQ(stats.rows, 1u);
  EXPECT_EQ(stats.missing_shards, 1u);
  EXPECT_EQ(read_file(dir / "sub" / "out.jsonl"), "{\"id\": 1}\n");
}

}  // namespace
}  // namespace qed::pipeline
