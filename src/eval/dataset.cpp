#include "eval/dataset.h"

#include <cstdlib>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "eval/jsonl_file.h"

namespace qed::eval {

namespace {

std::string text_field(const nlohmann::json& row, const char* a, const char* b) {
  for (const char* key : {a, b}) {
    if (!row.contains(key) || row[key].is_null()) continue;
    const auto& v = row[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number()) return v.dump();
  }
  return {};
}

}  // namespace

std::string resolve_dataset(const std::string& name_or_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(name_or_path, ec)) return name_or_path;
  std::vector<std::string> tried{name_or_path};
  if (name_or_path.find('/') == std::string::npos && name_or_path.find('.') == std::string::npos) {
    std::vector<std::string> roots;
    if (const char* env = std::getenv("QED_DATA_DIR"); env && *env) roots.emplace_back(env);
    roots.emplace_back(QED_DEFAULT_DATA_DIR);
    for (const auto& root : roots) {
      std::string candidate = (fs::path(root) / "math" / (name_or_path + ".jsonl")).string();
      if (fs::is_regular_file(candidate, ec)) return candidate;
      tried.push_back(candidate);
    }
  }
  std::string list;
  for (const auto& t : tried) list += (list.empty() ? "" : ", ") + t;
  fail("dataset '{}' not found (looked at: {})", name_or_path, list);
}

std::vector<Problem> load_dataset(const std::string& path) {
  std::vector<nlohmann::json> rows = read_jsonl(path);
  std::vector<Problem> problems;
  std::set<std::string> ids;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    Problem p;
    p.id = text_field(row, "id", "problem_id");
    if (p.id.empty()) p.id = std::to_string(i);
    p.problem = text_field(row, "problem", "question");
    p.expected_answer = text_field(row, "expected_answer", "answer");
    if (p.problem.empty()) fail("{}: row {} has no 'problem' text", path, i + 1);
    if (p.expected_answer.empty()) fail("{}: row {} has no 'expected_answer'", path, i + 1);
    if (!ids.insert(p.id).second) fail("{}: row {} repeats id '{}'", path, i + 1, p.id);
    problems.push_back(std::move(p));
  }
  if (problems.empty()) fail("{}: no problems", path);
  return problems;
}

}  // namespace qed::eval
