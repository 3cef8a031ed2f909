#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include <memory>

#include "core/error.h"

namespace qed::tok {
namespace {

// PCRE2 needs per-call match data and a JIT stack; each thread keeps one set so encode() allocates nothing and
// can run on many threads at once over the same compiled patterns.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, jit_stack); }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_data_free(data);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};

MatchScratch& thread_scratch() {
  thread_local MatchScratch scratch;
  if (scratch.data == nullptr || scratch.context == nullptr || scratch.jit_stack == nullptr) {
    throw Error("tokenizer: out of memory for PCRE2 match data");
  }
  return scratch;
}

}  // namespace

std::string oniguruma_compatible_pattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      if (next == 's') {
        out += "\\p{White_Space}";
      } else if (next == 'S') {
        out += "\\P{White_Space}";
      } else {
        out += pattern[i];
        out += next;
      }
      ++i;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

Regex::Regex(std::string_view pattern, bool literal, const std::string& source) : source_(source) {
  const std::string compiled = literal ? std::string(pattern) : oniguruma_compatible_pattern(pattern);
  // PCRE2_LITERAL refuses UCP (it has no classes to apply it to).
  const uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(), options, &error_code,
                        &error_offset, nullptr);
  if (code_ == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    fail("{}: split pattern '{}' does not compile at offset {}: {}", source, pattern, error_offset,
         reinterpret_cast<const char*>(message));
  }
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

Regex::Regex(Regex&& other) noexcept : code_(other.code_), jit_(other.jit_), source_(std::move(other.source_)) {
  other.code_ = nullptr;
}

Regex& Regex::operator=(Regex&& other) noexcept {
  if (this != &other) {
    pcre2_code_free(code_);
    code_ = other.code_;
    jit_ = other.jit_;
    source_ = std::move(other.source_);
    other.code_ = nullptr;
  }
  return *this;
}

Regex::~Regex() {
  pcre2_code_free(code_);
}

bool Regex::search(std::string_view subject, size_t from, size_t& start, size_t& end) const {
  MatchScratch& scratch = thread_scratch();
  // The subject is valid UTF-8 by construction (encode() repairs its input first), so skip PCRE2's re-check.
  const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const int rc =
      jit_ ? pcre2_jit_match(code_, text, subject.size(), from, PCRE2_NO_UTF_CHECK, scratch.data, scratch.context)
           : pcre2_match(code_, text, subject.size(), from, PCRE2_NO_UTF_CHECK, scratch.data, scratch.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof(message));
    fail("{}: split pattern failed on a {}-byte piece: {}", source_, subject.size(),
         reinterpret_cast<const char*>(message));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
  start = ovector[0];
  end = ovector[1];
  return true;
}

size_t Regex::next_char(std::string_view subject, size_t pos) {
  if (pos >= subject.size()) return pos + 1;
  size_t next = pos + 1;
  while (next < subject.size() && (static_cast<uint8_t>(subject[next]) & 0xC0) == 0x80) ++next;
  return next;
}

}  // namespace qed::tok
