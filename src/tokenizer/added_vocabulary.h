#pragma once
// Finds added tokens (<|im_start|>, <tool_call>, ...) in text before normalization and BPE, with HF's rules:
// leftmost-longest matching, single_word, lstrip/rstrip; tokens with normalized=false are matched on the raw
// text, normalized=true ones on the normalized text between them.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer_spec.h"

namespace qed::tok {

// Bytes [start, end) of the split text; token >= 0 is an added token's id, -1 plain text.
struct Segment {
  uint32_t start;
  uint32_t end;
  int32_t token;
};

class AddedVocabulary {
 public:
  AddedVocabulary(const std::vector<AddedTokenSpec>& tokens, const Normalizer& normalizer);

  bool has_normalized_tokens() const { return !normalized_.empty(); }
  // Splits `text` around the raw-text (normalized=false) or the normalized-text tokens. Covers all of `text`;
  // never yields empty text segments.
  void split(std::string_view text, bool normalized_set, std::vector<Segment>& out) const;

 private:
  // A byte trie over token contents for leftmost-longest matching.
  class Matcher {
   public:
    void add(std::string_view content, uint32_t token_index);
    bool empty() const { return nodes_.size() <= 1; }
    // Longest token starting at text[pos]; -1 if none. Sets `length`.
    int32_t longest_at(std::string_view text, size_t pos, size_t& length) const;
    bool may_start(uint8_t byte) const { return first_byte_[byte]; }

   private:
    struct Node {
      std::vector<std::pair<uint8_t, uint32_t>> children;  // sorted by byte
      int32_t token_index = -1;
    };
    std::vector<Node> nodes_{Node{}};
    bool first_byte_[256] = {};
  };

  struct Token {
    int32_t id;
    bool single_word;
    bool lstrip;
    bool rstrip;
  };

  std::vector<Token> tokens_;
  Matcher raw_;
  Matcher normalized_;
};

}  // namespace qed::tok
