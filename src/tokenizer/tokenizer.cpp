// Tokenizer: HF's encode pipeline (added tokens → normalizer → pre-tokenizer → BPE → post-processor) and decode
// (ByteLevel decoder + from_utf8_lossy), assembled from the components in this folder.
#include "tokenizer/tokenizer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/hash_tables.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer_spec.h"
#include "tokenizer/utf8.h"

namespace qed {

using tok::Segment;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: read error", path);
  return std::move(text).str();
}

// Strings indexed by token id, stored back to back.
class IdStrings {
 public:
  void build(const std::vector<std::string_view>& by_id) {
    offsets_.assign(by_id.size() + 1, 0);
    size_t total = 0;
    for (const auto& s : by_id) total += s.size();
    arena_.reserve(total);
    for (size_t i = 0; i < by_id.size(); ++i) {
      arena_.append(by_id[i]);
      offsets_[i + 1] = arena_.size();
    }
  }
  std::string_view get(size_t id) const {
    return std::string_view(arena_).substr(offsets_[id], offsets_[id + 1] - offsets_[id]);
  }

 private:
  std::string arena_;
  std::vector<size_t> offsets_;
};

enum TokenFlags : uint8_t { kKnown = 1, kAdded = 2, kSpecial = 4 };

// Reused buffers for one encode() call, per thread, so steady-state encoding does not allocate.
struct EncodeScratch {
  std::vector<Segment> raw_segments;
  std::vector<Segment> normalized_segments;
  std::string normalized;
  tok::PreTokenizer::Words words;
};

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  tok::StringIdTable ids_by_token;  // tokenizer.json strings: added tokens, then the model vocab
  IdStrings token_text;             // as written in tokenizer.json
  IdStrings token_bytes;            // what the ByteLevel decoder turns each token into
  std::vector<uint8_t> flags;
  tok::Normalizer normalizer;
  std::unique_ptr<tok::AddedVocabulary> added;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::BpeModel> model;
  std::vector<tok::TemplateItem> single_template;
  std::optional<int32_t> bos;
  std::optional<int32_t> eos;

  Impl(const tok::TokenizerSpec& spec, const std::string& source_name);

  bool known(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < flags.size() && (flags[id] & kKnown); }
  void encode_text(std::string_view text, EncodeScratch& scratch, std::vector<int32_t>& ids) const;
};

Tokenizer::Impl::Impl(const tok::TokenizerSpec& spec, const std::string& source_name)
    : source(source_name), normalizer(spec.normalizers), single_template(spec.single_template) {
  tok::StringIdTable vocab;
  vocab.reserve(spec.model.vocab.size());
  int64_t max_id = -1;
  for (const auto& [token, id] : spec.model.vocab) {
    vocab.insert(token, id);
    max_id = std::max<int64_t>(max_id, id);
  }
  for (const auto& t : spec.added_tokens) max_id = std::max<int64_t>(max_id, t.id);
  const size_t count = spec.model.vocab.size() + spec.added_tokens.size();
  // Ids index dense tables; refuse files whose ids would make those tables absurdly sparse.
  if (max_id >= static_cast<int64_t>(4 * count + 1024)) {
    fail("{}: token id {} is far beyond the {} tokens defined (ids must be dense)", source, max_id, count);
  }

  const auto n = static_cast<size_t>(max_id + 1);
  std::vector<std::string_view> text(n);
  flags.assign(n, 0);
  for (const auto& [token, id] : spec.model.vocab) {
    text[static_cast<size_t>(id)] = token;
    flags[static_cast<size_t>(id)] = kKnown;
  }
  for (const auto& t : spec.added_tokens) {
    text[static_cast<size_t>(t.id)] = t.content;
    flags[static_cast<size_t>(t.id)] = kKnown | kAdded | (t.special ? kSpecial : 0);
  }
  token_text.build(text);

  // HF's ByteLevel decoder maps each token's characters back to bytes, or keeps the token's own UTF-8 when any
  // character is outside the byte alphabet (e.g. an added token containing a space).
  std::vector<std::string> decoded(n);
  std::vector<std::string_view> decoded_views(n);
  for (size_t id = 0; id < n; ++id) {
    auto bytes = byte_level::to_bytes(text[id]);
    decoded[id] = bytes ? std::move(*bytes) : std::string(text[id]);
    decoded_views[id] = decoded[id];
  }
  token_bytes.build(decoded_views);

  ids_by_token.reserve(count);
  for (const auto& [token, id] : spec.model.vocab) ids_by_token.insert(token, id);
  for (const auto& t : spec.added_tokens) ids_by_token.insert(t.content, t.id);

  added = std::make_unique<tok::AddedVocabulary>(spec.added_tokens, normalizer);
  pre_tokenizer = std::make_unique<tok::PreTokenizer>(spec.pre_tokenizers, source);
  model = std::make_unique<tok::BpeModel>(spec.model, vocab, source);
}

void Tokenizer::Impl::encode_text(std::string_view text, EncodeScratch& scratch, std::vector<int32_t>& ids) const {
  pre_tokenizer->split(text, scratch.words);
  for (const tok::Word& word : scratch.words.words) model->encode_word(scratch.words.view(word), ids);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_text(std::string_view json_text, const std::string& source) {
  const tok::TokenizerSpec spec = tok::parse_tokenizer_json(json_text, source);
  return Tokenizer(std::make_unique<Impl>(spec, source));
}

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path) {
  return from_json_text(read_file(tokenizer_json_path), tokenizer_json_path);
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("{}: not a directory (expected a folder with tokenizer.json)", dir);
  const fs::path json_path = fs::path(dir) / "tokenizer.json";
  if (!fs::exists(json_path, ec)) fail("{}: no tokenizer.json in this directory", dir);
  Tokenizer tokenizer = from_file(json_path.string());

  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    const std::string name = config_path.string();
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(read_file(name));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", name, e.what());
    }
    // bos_token/eos_token are a token string, an AddedToken object {"content": ...}, or null.
    auto lookup = [&](const char* key) -> std::optional<int32_t> {
      if (!config.is_object()) return std::nullopt;
      auto it = config.find(key);
      if (it == config.end() || it->is_null()) return std::nullopt;
      const nlohmann::json* content = &*it;
      if (it->is_object()) {
        auto c = it->find("content");
        if (c == it->end()) fail("{}: {}: object without 'content'", name, key);
        content = &*c;
      }
      if (!content->is_string()) fail("{}: {}: expected a token string", name, key);
      const auto id = tokenizer.token_to_id(content->get<std::string>());
      if (!id) fail("{}: {} '{}' is not a token of tokenizer.json", name, key, content->get<std::string>());
      return id;
    };
    tokenizer.impl_->bos = lookup("bos_token");
    tokenizer.impl_->eos = lookup("eos_token");
  }
  return tokenizer;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (!utf8::is_valid(text)) {
    // Callers holding bytes rather than text get what HF gives for bytes.decode("utf-8", errors="replace").
    std::string repaired;
    utf8::append_lossy(repaired, text);
    return encode(repaired, add_special_tokens);
  }

  thread_local EncodeScratch scratch;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->added->split(text, false, scratch.raw_segments);
  for (const Segment& raw : scratch.raw_segments) {
    if (raw.token >= 0) {
      ids.push_back(raw.token);
      continue;
    }
    const std::string_view normalized =
        impl_->normalizer.apply(text.substr(raw.start, raw.end - raw.start), scratch.normalized);
    if (!impl_->added->has_normalized_tokens()) {
      impl_->encode_text(normalized, scratch, ids);
      continue;
    }
    impl_->added->split(normalized, true, scratch.normalized_segments);
    for (const Segment& seg : scratch.normalized_segments) {
      if (seg.token >= 0) {
        ids.push_back(seg.token);
      } else {
        impl_->encode_text(normalized.substr(seg.start, seg.end - seg.start), scratch, ids);
      }
    }
  }

  if (!add_special_tokens || impl_->single_template.empty()) return ids;
  std::vector<int32_t> wrapped;
  wrapped.reserve(ids.size() + 8);
  for (const tok::TemplateItem& item : impl_->single_template) {
    const auto& part = item.is_input ? ids : item.ids;
    wrapped.insert(wrapped.end(), part.begin(), part.end());
  }
  return wrapped;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  // HF decodes every known token (added ones too) through the ByteLevel decoder, concatenates the bytes and
  // replaces invalid UTF-8 once over the whole; unknown ids are dropped.
  std::string bytes;
  for (const int32_t id : ids) {
    if (!impl_->known(id)) continue;
    if (skip_special_tokens && (impl_->flags[static_cast<size_t>(id)] & kSpecial)) continue;
    bytes.append(impl_->token_bytes.get(static_cast<size_t>(id)));
  }
  if (utf8::is_valid(bytes)) return bytes;
  std::string text;
  text.reserve(bytes.size() + 8);
  utf8::append_lossy(text, bytes);
  return text;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (!impl_->known(id)) return {};
  return std::string(impl_->token_bytes.get(static_cast<size_t>(id)));
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const int32_t id = impl_->ids_by_token.find(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (!impl_->known(id)) return {};
  return std::string(impl_->token_text.get(static_cast<size_t>(id)));
}

bool Tokenizer::is_special(int32_t id) const {
  return impl_->known(id) && (impl_->flags[static_cast<size_t>(id)] & kSpecial);
}

size_t Tokenizer::vocab_size() const {
  return impl_->flags.size();
}

std::optional<int32_t> Tokenizer::bos_token_id() const {
  return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_token_id() const {
  return impl_->eos;
}

}  // namespace qed
