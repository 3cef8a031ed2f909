#pragma once
// JSON-lines files: reading (one object per line, errors name file:line) and the append-only results file that
// makes an eval resumable: each row is written with one write(2) and fsync'd before it counts as done, and on
// reopening a torn last line (the process was killed mid-write) is cut off, so a rerun neither loses nor
// duplicates a finished row.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qed::eval {

std::vector<nlohmann::json> read_jsonl(const std::string& path);

class ResultsFile {
 public:
  // Opens (creating) `path` for appending; the rows already in it are available through rows().
  explicit ResultsFile(const std::string& path);
  ~ResultsFile();
  ResultsFile(const ResultsFile&) = delete;
  ResultsFile& operator=(const ResultsFile&) = delete;

  const std::vector<nlohmann::json>& existing_rows() const { return existing_; }
  void append(const nlohmann::json& row);  // not thread-safe: callers serialize

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<nlohmann::json> existing_;
};

}  // namespace qed::eval
