#pragma once
// Read-only memory map of a whole file (checkpoints are mmap'd, never copied).
#include <cstddef>
#include <string>

namespace qed {

class MmapFile {
 public:
  explicit MmapFile(const std::string& path);  // throws qed::Error naming the path
  ~MmapFile();
  MmapFile(const MmapFile&) = delete;
  MmapFile& operator=(const MmapFile&) = delete;
  MmapFile(MmapFile&& other) noexcept;
  MmapFile& operator=(MmapFile&& other) noexcept;

  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

// Whole-file read into a string; throws qed::Error naming the path.
std::string read_text_file(const std::string& path);

}  // namespace qed
