#pragma once
// A fresh directory under the system temp dir, removed with everything in it when the test ends.
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace qed::test {

class TempDir {
 public:
  TempDir() {
    std::random_device random;
    path_ = std::filesystem::temp_directory_path() / ("qed-model-test-" + std::to_string(random()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& contents) const {
    std::string full = file(name);
    std::ofstream(full, std::ios::binary) << contents;
    return full;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace qed::test
