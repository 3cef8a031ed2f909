#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "eval/jsonl_file.h"

namespace qed::eval {

namespace {

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / (std::string(name) + "." + std::to_string(getpid()))).string();
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(ResultsFile, AppendedRowsAreThereOnReopen) {
  std::string path = temp_path("qed_results_append");
  std::filesystem::remove(path);
  {
    ResultsFile f(path);
    EXPECT_TRUE(f.existing_rows().empty());
    f.append({{"problem_id", "a"}, {"sample", 0}});
    f.append({{"problem_id", "a"}, {"sample", 1}});
  }
  ResultsFile again(path);
  ASSERT_EQ(again.existing_rows().size(), 2u);
  EXPECT_EQ(again.existing_rows()[1]["sample"], 1);
  std::filesystem::remove(path);
}

TEST(ResultsFile, ATornLastRowIsCutOffOnReopen) {
  std::string path = temp_path("qed_results_torn");
  {
    std::ofstream out(path);
    out << R"({"problem_id":"a","sample":0})"
        << "\n"
        << R"({"problem_id":"a","sam)";
  }
  {
    ResultsFile f(path);
    ASSERT_EQ(f.existing_rows().size(), 1u);
    f.append({{"problem_id", "a"}, {"sample", 1}});
  }
  EXPECT_EQ(read(path), "{\"problem_id\":\"a\",\"sample\":0}\n{\"problem_id\":\"a\",\"sample\":1}\n");
  std::filesystem::remove(path);
}

TEST(ReadJsonl, ABadLineNamesFileAndLine) {
  std::string path = temp_path("qed_bad_jsonl");
  {
    std::ofstream out(path);
    out << "{}\n[1]\n";
  }
  try {
    read_jsonl(path);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(":2:"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

}  // namespace qed::eval
