#pragma once
// Splits normalized text into the words BPE sees: HF's Split steps (regex/literal with a delimiter behaviour)
// followed by the ByteLevel step (optional prefix space and GPT-2 regex). The byte-to-character mapping of
// ByteLevel is not applied: the BPE model works on raw bytes (see byte_level.h).
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/tokenizer_spec.h"

namespace qed::tok {

// A word: bytes [offset, offset + length) of PreTokenizer::Words::buffer.
struct Word {
  uint32_t offset;
  uint32_t length;
};

class PreTokenizer {
 public:
  struct Words {
    std::string buffer;
    std::vector<Word> words;
    std::string_view view(const Word& w) const { return std::string_view(buffer).substr(w.offset, w.length); }
  };

  PreTokenizer(const std::vector<PreTokenizerStep>& steps, const std::string& source);

  // Replaces `out` with the words of `text` (valid UTF-8), in order; empty words are dropped as HF does.
  void split(std::string_view text, Words& out) const;

 private:
  struct SplitStep {
    Regex regex;
    SplitBehavior behavior;
    bool invert;
  };
  struct PrefixSpaceStep {};
  using Step = std::variant<SplitStep, PrefixSpaceStep>;

  void apply_split(const SplitStep& step, Words& words) const;
  static void apply_prefix_space(Words& words);

  std::vector<Step> steps_;
};

}  // namespace qed::tok
