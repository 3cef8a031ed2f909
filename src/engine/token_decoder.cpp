#include "engine/token_decoder.h"

#include "tokenizer/tokenizer.h"

namespace qed {
namespace {

class TokenizerDecoder final : public TokenDecoder {
 public:
  TokenizerDecoder(const Tokenizer& tokenizer, bool skip_special) : detok_(tokenizer, skip_special) {}
  std::string push(int32_t token) override { return detok_.push(token); }
  std::string flush() override { return detok_.flush(); }

 private:
  IncrementalDetokenizer detok_;
};

}  // namespace

TokenDecoderFactory tokenizer_decoder_factory(const Tokenizer& tokenizer) {
  return [&tokenizer](bool skip_special) { return std::make_unique<TokenizerDecoder>(tokenizer, skip_special); };
}

}  // namespace qed
