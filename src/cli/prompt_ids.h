#pragma once
// `--prompt-ids 1,2,3` (commas and/or spaces) → token ids; shared by the commands that take raw ids.
#include <cstdint>
#include <string>
#include <vector>

namespace qed::cli {

// Throws qed::Error naming the bad word, or when no id is given.
std::vector<int32_t> parse_prompt_ids(const std::string& text);

}  // namespace qed::cli
