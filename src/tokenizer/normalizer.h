#pragma once
// Unicode normalization (NFC for Qwen) through utf8proc, applied to the text between added tokens as HF does.
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer_spec.h"

namespace qed::tok {

class Normalizer {
 public:
  Normalizer() = default;
  explicit Normalizer(std::vector<NormalizationForm> forms) : forms_(std::move(forms)) {}

  bool empty() const { return forms_.empty(); }
  // Normalized `text` (valid UTF-8): either `text` itself when nothing changes, or a view of `buffer`.
  std::string_view apply(std::string_view text, std::string& buffer) const;

 private:
  std::vector<NormalizationForm> forms_;
};

}  // namespace qed::tok
