#pragma once
// Eval datasets: JSON lines with a problem and its expected answer (../shared/data/math/SOURCES.md), by name
// (aime24, aime25, amc23, math500, gsm8k) or by path.
#include <string>
#include <vector>

namespace qed::eval {

struct Problem {
  std::string id;
  std::string problem;
  std::string expected_answer;
};

// A path that exists is used as it is; a bare name resolves to $QED_DATA_DIR/math/NAME.jsonl, else to the
// repository's ../shared/data/math/NAME.jsonl. Throws naming every place looked at.
std::string resolve_dataset(const std::string& name_or_path);

// Rows need "problem" (or "question") and "expected_answer" (or "answer"; numbers are written as text); "id"
// defaults to the row's index. Throws naming file:line on a bad row or a repeated id.
std::vector<Problem> load_dataset(const std::string& path);

}  // namespace qed::eval
