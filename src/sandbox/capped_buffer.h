#pragma once
// Keeps the first `limit` bytes of a stream and counts the rest: reading a runaway writer costs bounded memory.
#include <cstddef>
#include <string>
#include <string_view>

namespace qed::sandbox {

class CappedBuffer {
 public:
  explicit CappedBuffer(size_t limit) : limit_(limit) {}

  void append(std::string_view bytes) {
    total_ += bytes.size();
    if (data_.size() < limit_) data_.append(bytes.substr(0, limit_ - data_.size()));
  }
  const std::string& data() const { return data_; }
  size_t total_bytes() const { return total_; }
  bool truncated() const { return total_ > data_.size(); }
  void clear() {
    data_.clear();
    total_ = 0;
  }

 private:
  size_t limit_;
  size_t total_ = 0;
  std::string data_;
};

}  // namespace qed::sandbox
