#pragma once
// HF tokenizer.json (byte-level BPE) encode/decode, byte-exact with HF `tokenizers`.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qed {

class Tokenizer {
 public:
  // tokenizer.json alone; throws qed::Error naming the file on anything malformed.
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  // A model/tokenizer directory: tokenizer.json (+ tokenizer_config.json for bos/eos names if present).
  static Tokenizer from_dir(const std::string& dir);
  // Parses tokenizer.json text already in memory (`source` names it in errors). Used by the fuzzer.
  static Tokenizer from_json_text(std::string_view json_text, const std::string& source);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Like HF `Tokenizer.encode(text, add_special_tokens=...)`.ids: added/special tokens in the text are matched,
  // `add_special_tokens` applies the post-processor (e.g. Llama-3's BOS).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Like HF `decode(ids, skip_special_tokens=...)`; invalid UTF-8 becomes U+FFFD as HF does.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;
  // The raw bytes a token stands for (byte-level decoded); may be a partial UTF-8 sequence.
  std::string token_bytes(int32_t id) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;  // vocab or added token
  std::string id_to_token(int32_t id) const;                         // as written in tokenizer.json
  bool is_special(int32_t id) const;                                 // added token with special=true
  size_t vocab_size() const;                                         // max id + 1

  // From tokenizer_config.json when loaded from a dir; nullopt if absent.
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streams text as tokens arrive without ever emitting a broken UTF-8 sequence: bytes of an incomplete character
// are held until it completes. The concatenation of push()+flush() equals decode(all ids).
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens);
  std::string push(int32_t id);
  std::string flush();  // end of stream: emits anything held (invalid bytes as U+FFFD)

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // decoded bytes not yet emitted: an incomplete UTF-8 character at the end
};

}  // namespace qed
