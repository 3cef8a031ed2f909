#include "eval/jsonl_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace qed::eval {

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json parse_line(const std::string& path, size_t line_no, const std::string& line) {
  try {
    nlohmann::json row = nlohmann::json::parse(line);
    if (!row.is_object()) fail("{}:{}: a row must be a JSON object", path, line_no);
    return row;
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}:{}: not JSON: {}", path, line_no, e.what());
  }
}

}  // namespace

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::string text = read_all(path);
  std::vector<nlohmann::json> rows;
  std::istringstream in(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    rows.push_back(parse_line(path, line_no, line));
  }
  return rows;
}

ResultsFile::ResultsFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot open for writing: {}", path, std::strerror(errno));
  std::string text = read_all(path);
  // Everything up to the last newline was fsync'd row by row; bytes after it are a torn write.
  size_t keep = text.rfind('\n');
  keep = keep == std::string::npos ? 0 : keep + 1;
  if (keep != text.size()) {
    if (::ftruncate(fd_, static_cast<off_t>(keep)) != 0)
      fail("{}: cannot truncate torn row: {}", path, std::strerror(errno));
    text.resize(keep);
  }
  std::istringstream in(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    existing_.push_back(parse_line(path, line_no, line));
  }
  if (::lseek(fd_, 0, SEEK_END) < 0) fail("{}: seek failed: {}", path, std::strerror(errno));
}

ResultsFile::~ResultsFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ResultsFile::append(const nlohmann::json& row) {
  std::string line = row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("{}: write failed: {}", path_, std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd_) != 0) fail("{}: fsync failed: {}", path_, std::strerror(errno));
}

}  // namespace qed::eval
