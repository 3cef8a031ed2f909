#include "cli/prompt_ids.h"

#include <climits>
#include <exception>

#include "core/error.h"

namespace qed::cli {

std::vector<int32_t> parse_prompt_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    size_t used = 0;
    long long value = -1;
    try {
      value = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || value < 0 || value > INT32_MAX) fail("--prompt-ids: '{}' is not a token id", word);
    ids.push_back(int32_t(value));
    word.clear();
  };
  for (char c : text) {
    if (c == ',' || c == ' ') {
      flush();
    } else {
      word += c;
    }
  }
  flush();
  if (ids.empty()) fail("--prompt-ids: no token ids given");
  return ids;
}

}  // namespace qed::cli
