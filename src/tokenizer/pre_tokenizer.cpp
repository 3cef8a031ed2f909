#include "tokenizer/pre_tokenizer.h"

#include <algorithm>

#include "core/error.h"

namespace qed::tok {
namespace {

// GPT-2's pattern, used by the ByteLevel pre-tokenizer when use_regex=true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Span {
  uint32_t start;
  uint32_t end;
  bool is_match;
};

// HF's NormalizedString::split: turns (span, is_match) runs into the kept pieces for one behaviour.
void pieces_for_behavior(const std::vector<Span>& spans, SplitBehavior behavior, std::vector<Span>& out) {
  out.clear();
  switch (behavior) {
    case SplitBehavior::kIsolated:
      out = spans;
      return;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out.push_back(s);
      }
      return;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (size_t i = spans.size(); i-- > 0;) {
        const Span& s = spans[i];
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().start = s.start;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      std::reverse(out.begin(), out.end());
      return;
    }
  }
}

}  // namespace

PreTokenizer::PreTokenizer(const std::vector<PreTokenizerStep>& steps, const std::string& source) {
  for (const auto& step : steps) {
    if (const auto* split = std::get_if<SplitSpec>(&step)) {
      steps_.emplace_back(SplitStep{Regex(split->pattern, split->literal, source), split->behavior, split->invert});
    } else {
      const auto& bl = std::get<ByteLevelSpec>(step);
      if (bl.add_prefix_space) steps_.emplace_back(PrefixSpaceStep{});
      if (bl.use_regex) {
        steps_.emplace_back(SplitStep{Regex(kGpt2Pattern, false, source), SplitBehavior::kIsolated, false});
      }
    }
  }
}

void PreTokenizer::split(std::string_view text, Words& out) const {
  out.buffer.assign(text);
  out.words.clear();
  if (text.size() > UINT32_MAX / 2) fail("tokenizer: text of {} bytes is too long to encode at once", text.size());
  if (!text.empty()) out.words.push_back(Word{0, static_cast<uint32_t>(text.size())});
  for (const Step& step : steps_) {
    if (const auto* split = std::get_if<SplitStep>(&step)) {
      apply_split(*split, out);
    } else {
      apply_prefix_space(out);
    }
  }
}

void PreTokenizer::apply_split(const SplitStep& step, Words& words) const {
  thread_local std::vector<Span> spans;
  thread_local std::vector<Span> pieces;
  thread_local std::vector<Word> next;
  next.clear();
  for (const Word& word : words.words) {
    const std::string_view text = words.view(word);
    spans.clear();
    uint32_t previous = 0;
    step.regex.for_each_match(text, [&](size_t start, size_t end) {
      if (previous != start) spans.push_back(Span{previous, static_cast<uint32_t>(start), false});
      spans.push_back(Span{static_cast<uint32_t>(start), static_cast<uint32_t>(end), true});
      previous = static_cast<uint32_t>(end);
    });
    if (previous != text.size()) spans.push_back(Span{previous, static_cast<uint32_t>(text.size()), false});
    if (step.invert) {
      for (Span& s : spans) s.is_match = !s.is_match;
    }
    pieces_for_behavior(spans, step.behavior, pieces);
    for (const Span& p : pieces) {
      if (p.end > p.start) next.push_back(Word{word.offset + p.start, p.end - p.start});
    }
  }
  words.words.swap(next);
}

void PreTokenizer::apply_prefix_space(Words& words) {
  // HF's ByteLevel checks each piece for a leading ' ' (U+0020 only) and prepends one if absent.
  for (Word& word : words.words) {
    if (words.buffer[word.offset] == ' ') continue;
    words.buffer.reserve(words.buffer.size() + word.length + 1);
    const auto offset = static_cast<uint32_t>(words.buffer.size());
    words.buffer.push_back(' ');
    words.buffer.append(words.buffer.data() + word.offset, word.length);
    word = Word{offset, word.length + 1};
  }
}

}  // namespace qed::tok
