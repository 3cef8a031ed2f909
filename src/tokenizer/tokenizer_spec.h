#pragma once
// What a tokenizer.json says, as plain data: tokenizer_json.cpp fills it (the one place that reads the format)
// and checks everything qed cannot honour; the components are built from it.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace qed::tok {

struct AddedTokenSpec {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

enum class NormalizationForm { kNFC, kNFD, kNFKC, kNFKD };

// HF's SplitDelimiterBehavior.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitSpec {
  std::string pattern;
  bool literal = false;  // {"String": ...} rather than {"Regex": ...}
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

struct ByteLevelSpec {
  bool add_prefix_space = false;
  bool use_regex = true;
};

using PreTokenizerStep = std::variant<SplitSpec, ByteLevelSpec>;

struct BpeSpec {
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool ignore_merges = false;
};

// One item of TemplateProcessing's "single" template: the input sequence, or fixed special-token ids.
struct TemplateItem {
  bool is_input = false;
  std::vector<int32_t> ids;
};

struct TokenizerSpec {
  BpeSpec model;
  std::vector<AddedTokenSpec> added_tokens;
  std::vector<NormalizationForm> normalizers;  // applied in order; empty = none
  std::vector<PreTokenizerStep> pre_tokenizers;
  // Items applied when add_special_tokens=true; empty = the post-processor adds nothing (e.g. ByteLevel only).
  std::vector<TemplateItem> single_template;
};

// Throws qed::Error naming `source` (and the JSON path) on anything malformed or unsupported.
TokenizerSpec parse_tokenizer_json(std::string_view json_text, const std::string& source);

}  // namespace qed::tok
