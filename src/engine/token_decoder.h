#pragma once
// Incremental token → text for the engine's streams. An interface so the engine does not depend on a real
// tokenizer (tests use a table); tokenizer_decoder_factory adapts IncrementalDetokenizer.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace qed {

class Tokenizer;

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  virtual std::string push(int32_t token) = 0;  // text completed by this token (may be empty)
  virtual std::string flush() = 0;              // end of stream: whatever is held back
};

using TokenDecoderFactory = std::function<std::unique_ptr<TokenDecoder>(bool skip_special_tokens)>;

// `tokenizer` must outlive every decoder made.
TokenDecoderFactory tokenizer_decoder_factory(const Tokenizer& tokenizer);

}  // namespace qed
