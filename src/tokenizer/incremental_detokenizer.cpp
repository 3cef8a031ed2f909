#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace qed {

// decode() is from_utf8_lossy over the concatenated token bytes, and lossy replacement is local: each invalid
// subpart is decided by the bytes up to its end. Holding back only a still-completable tail therefore emits
// exactly the text decode() would produce for the same prefix, and flush() finishes it.

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  if (skip_special_tokens_ && tokenizer_.is_special(id)) return {};
  pending_ += tokenizer_.token_bytes(id);
  const size_t held = utf8::incomplete_tail_length(pending_);
  const size_t ready = pending_.size() - held;
  std::string out;
  utf8::append_lossy(out, std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  utf8::append_lossy(out, pending_);
  pending_.clear();
  return out;
}

}  // namespace qed
