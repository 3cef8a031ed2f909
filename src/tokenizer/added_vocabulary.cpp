#include "tokenizer/added_vocabulary.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace qed::tok {
namespace {

bool ends_with_word_char(std::string_view text, size_t end) {
  if (end == 0) return false;
  char32_t c = 0;
  utf8::decode_last(text, end, c);
  return utf8::is_word_char(c);
}

bool starts_with_word_char(std::string_view text, size_t start) {
  if (start >= text.size()) return false;
  char32_t c = 0;
  utf8::decode(text, start, c);
  return utf8::is_word_char(c);
}

// Start of the whitespace run that ends at `end`.
size_t whitespace_run_start(std::string_view text, size_t end) {
  while (end > 0) {
    char32_t c = 0;
    const size_t n = utf8::decode_last(text, end, c);
    if (!utf8::is_whitespace(c)) break;
    end -= n;
  }
  return end;
}

// End of the whitespace run that starts at `start`.
size_t whitespace_run_end(std::string_view text, size_t start) {
  while (start < text.size()) {
    char32_t c = 0;
    const size_t n = utf8::decode(text, start, c);
    if (!utf8::is_whitespace(c)) break;
    start += n;
  }
  return start;
}

}  // namespace

void AddedVocabulary::Matcher::add(std::string_view content, uint32_t token_index) {
  uint32_t node = 0;
  for (const char ch : content) {
    const auto byte = static_cast<uint8_t>(ch);
    auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, uint8_t b) { return child.first < b; });
    if (it != children.end() && it->first == byte) {
      node = it->second;
    } else {
      const auto child = static_cast<uint32_t>(nodes_.size());
      children.insert(it, {byte, child});
      nodes_.emplace_back();
      node = child;
    }
  }
  nodes_[node].token_index = static_cast<int32_t>(token_index);
  first_byte_[static_cast<uint8_t>(content[0])] = true;
}

int32_t AddedVocabulary::Matcher::longest_at(std::string_view text, size_t pos, size_t& length) const {
  int32_t found = -1;
  uint32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, uint8_t b) { return child.first < b; });
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    if (nodes_[node].token_index >= 0) {
      found = nodes_[node].token_index;
      length = i + 1 - pos;
    }
  }
  return found;
}

AddedVocabulary::AddedVocabulary(const std::vector<AddedTokenSpec>& tokens, const Normalizer& normalizer) {
  std::string buffer;
  for (const AddedTokenSpec& t : tokens) {
    if (t.content.empty()) continue;  // HF ignores empty added tokens
    const auto index = static_cast<uint32_t>(tokens_.size());
    tokens_.push_back(Token{t.id, t.single_word, t.lstrip, t.rstrip});
    if (t.normalized) {
      // Matched against normalized text, so the pattern is the normalized content (invalid UTF-8 can't match).
      if (!utf8::is_valid(t.content)) continue;
      normalized_.add(normalizer.apply(t.content, buffer), index);
    } else {
      raw_.add(t.content, index);
    }
  }
}

void AddedVocabulary::split(std::string_view text, bool normalized_set, std::vector<Segment>& out) const {
  out.clear();
  const Matcher& matcher = normalized_set ? normalized_ : raw_;
  size_t emitted = 0;  // end of the last segment pushed
  size_t pos = 0;      // where the search for the next match starts (HF: after the previous raw match)
  if (!matcher.empty()) {
    while (pos < text.size()) {
      if (!matcher.may_start(static_cast<uint8_t>(text[pos]))) {
        ++pos;
        continue;
      }
      size_t length = 0;
      const int32_t index = matcher.longest_at(text, pos, length);
      if (index < 0) {
        ++pos;
        continue;
      }
      const Token& token = tokens_[static_cast<size_t>(index)];
      size_t start = pos;
      size_t stop = pos + length;
      pos = stop;
      if (token.single_word && (ends_with_word_char(text, start) || starts_with_word_char(text, stop))) continue;
      if (token.lstrip) start = std::max(whitespace_run_start(text, start), emitted);
      if (token.rstrip) stop = whitespace_run_end(text, stop);
      if (emitted < start) out.push_back(Segment{static_cast<uint32_t>(emitted), static_cast<uint32_t>(start), -1});
      out.push_back(Segment{static_cast<uint32_t>(start), static_cast<uint32_t>(stop), token.id});
      emitted = stop;
    }
  }
  if (emitted < text.size()) {
    out.push_back(Segment{static_cast<uint32_t>(emitted), static_cast<uint32_t>(text.size()), -1});
  }
}

}  // namespace qed::tok
