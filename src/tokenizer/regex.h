#pragma once
// A PCRE2 pattern (UTF + UCP, JIT-compiled) that iterates matches the way HF's Oniguruma-backed SysRegex does.
#include <cstddef>
#include <string>
#include <string_view>

struct pcre2_real_code_8;

namespace qed::tok {

class Regex {
 public:
  // `literal`: match the pattern text as a plain string (HF's {"String": ...} split pattern).
  Regex(std::string_view pattern, bool literal, const std::string& source);
  Regex(Regex&& other) noexcept;
  Regex& operator=(Regex&& other) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex();

  // Calls on_match(start, end) for each successive match in `subject` (valid UTF-8), with Oniguruma's find_iter
  // rule for empty matches: allowed, except right where the previous match ended.
  template <typename OnMatch>
  void for_each_match(std::string_view subject, OnMatch&& on_match) const {
    size_t search_from = 0;
    size_t last_match_end = std::string_view::npos;
    size_t start = 0;
    size_t end = 0;
    while (search_from <= subject.size() && search(subject, search_from, start, end)) {
      if (start == end && end == last_match_end) {
        search_from = next_char(subject, search_from);
        continue;
      }
      on_match(start, end);
      search_from = end;
      last_match_end = end;
    }
  }

 private:
  bool search(std::string_view subject, size_t from, size_t& start, size_t& end) const;
  static size_t next_char(std::string_view subject, size_t pos);

  pcre2_real_code_8* code_ = nullptr;
  bool jit_ = false;
  std::string source_;  // for error messages
};

// Rewrites \s and \S to \p{White_Space} / \P{White_Space}: Oniguruma's \s is exactly Unicode White_Space, while
// PCRE2's UCP \s also takes U+180E (MONGOLIAN VOWEL SEPARATOR), which would split text differently.
std::string oniguruma_compatible_pattern(std::string_view pattern);

}  // namespace qed::tok
