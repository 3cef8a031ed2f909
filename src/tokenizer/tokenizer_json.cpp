// Reads HF tokenizer.json (format "1.0" as written by `tokenizers`) into a TokenizerSpec. Anything qed cannot
// reproduce byte-exactly is rejected here with the JSON path, rather than half-supported later.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer_spec.h"

namespace qed::tok {
namespace {

using nlohmann::json;

class Reader {
 public:
  explicit Reader(const std::string& source) : source_(source) {}

  [[noreturn]] void error(const std::string& path, const std::string& what) const {
    fail("{}: {}: {}", source_, path, what);
  }

  const json& field(const json& obj, const std::string& path, const char* key) const {
    auto it = obj.find(key);
    if (it == obj.end()) error(path, fmt::format("missing field '{}'", key));
    return *it;
  }

  const json& object(const json& value, const std::string& path) const {
    if (!value.is_object()) error(path, fmt::format("expected an object, got {}", value.type_name()));
    return value;
  }

  const json& array(const json& value, const std::string& path) const {
    if (!value.is_array()) error(path, fmt::format("expected an array, got {}", value.type_name()));
    return value;
  }

  const std::string& string(const json& value, const std::string& path) const {
    if (!value.is_string()) error(path, fmt::format("expected a string, got {}", value.type_name()));
    return value.get_ref<const std::string&>();
  }

  int32_t id(const json& value, const std::string& path) const {
    if (!value.is_number_integer()) error(path, fmt::format("expected a token id, got {}", value.type_name()));
    const auto v = value.get<int64_t>();
    if (v < 0 || v > INT32_MAX) error(path, fmt::format("token id {} is out of range", v));
    return static_cast<int32_t>(v);
  }

  bool optional_bool(const json& obj, const std::string& path, const char* key, bool fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) error(path + "." + key, fmt::format("expected true/false, got {}", it->type_name()));
    return it->get<bool>();
  }

  std::string type_of(const json& obj, const std::string& path) const {
    return string(field(object(obj, path), path, "type"), path + ".type");
  }

  [[noreturn]] void unsupported(const std::string& path, const std::string& type) const {
    error(path, fmt::format("{} type '{}' is not supported by qed", path, type));
  }

 private:
  const std::string& source_;
};

void read_model(const Reader& r, const json& model, BpeSpec& spec) {
  const std::string type = r.type_of(model, "model");
  if (type != "BPE") r.unsupported("model", type);

  const json& vocab = r.object(r.field(model, "model", "vocab"), "model.vocab");
  spec.vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) spec.vocab.emplace_back(token, r.id(id, "model.vocab." + token));

  const json& merges = r.array(r.field(model, "model", "merges"), "model.merges");
  spec.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    const std::string path = fmt::format("model.merges[{}]", i);
    if (m.is_string()) {
      // HF splits the legacy "a b" form on single spaces and wants exactly two parts.
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        r.error(path, fmt::format("expected \"left right\", got \"{}\"", s));
      }
      spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2) {
      spec.merges.emplace_back(r.string(m[0], path + "[0]"), r.string(m[1], path + "[1]"));
    } else {
      r.error(path, "expected \"left right\" or [\"left\", \"right\"]");
    }
  }

  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) r.error("model.dropout", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto it = model.find(key); it != model.end() && !it->is_null()) {
      if (!r.string(*it, std::string("model.") + key).empty()) {
        r.error(std::string("model.") + key, "only empty/null is supported (byte-level BPE)");
      }
    }
  }
  if (r.optional_bool(model, "model", "byte_fallback", false)) {
    r.error("model.byte_fallback", "byte_fallback=true is not supported (qed implements byte-level BPE)");
  }
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    spec.unk_token = r.string(*it, "model.unk_token");
  }
  spec.fuse_unk = r.optional_bool(model, "model", "fuse_unk", false);
  spec.ignore_merges = r.optional_bool(model, "model", "ignore_merges", false);
}

void read_added_tokens(const Reader& r, const json& tokens, std::vector<AddedTokenSpec>& out) {
  r.array(tokens, "added_tokens");
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string path = fmt::format("added_tokens[{}]", i);
    const json& t = r.object(tokens[i], path);
    AddedTokenSpec spec;
    spec.id = r.id(r.field(t, path, "id"), path + ".id");
    spec.content = r.string(r.field(t, path, "content"), path + ".content");
    spec.special = r.optional_bool(t, path, "special", false);
    spec.single_word = r.optional_bool(t, path, "single_word", false);
    spec.lstrip = r.optional_bool(t, path, "lstrip", false);
    spec.rstrip = r.optional_bool(t, path, "rstrip", false);
    spec.normalized = r.optional_bool(t, path, "normalized", !spec.special);
    out.push_back(std::move(spec));
  }
}

void read_normalizer(const Reader& r, const json& n, const std::string& path, std::vector<NormalizationForm>& out) {
  if (n.is_null()) return;
  const std::string type = r.type_of(n, path);
  if (type == "NFC") {
    out.push_back(NormalizationForm::kNFC);
  } else if (type == "NFD") {
    out.push_back(NormalizationForm::kNFD);
  } else if (type == "NFKC") {
    out.push_back(NormalizationForm::kNFKC);
  } else if (type == "NFKD") {
    out.push_back(NormalizationForm::kNFKD);
  } else if (type == "Sequence") {
    const json& list = r.array(r.field(n, path, "normalizers"), path + ".normalizers");
    for (size_t i = 0; i < list.size(); ++i) {
      read_normalizer(r, list[i], fmt::format("{}.normalizers[{}]", path, i), out);
    }
  } else {
    r.unsupported(path, type);
  }
}

SplitBehavior read_behavior(const Reader& r, const json& value, const std::string& path) {
  const std::string& s = r.string(value, path);
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  r.error(path, fmt::format("unknown split behavior '{}'", s));
}

void read_pre_tokenizer(const Reader& r, const json& p, const std::string& path, std::vector<PreTokenizerStep>& out) {
  if (p.is_null()) return;
  const std::string type = r.type_of(p, path);
  if (type == "Sequence") {
    const json& list = r.array(r.field(p, path, "pretokenizers"), path + ".pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) {
      read_pre_tokenizer(r, list[i], fmt::format("{}.pretokenizers[{}]", path, i), out);
    }
  } else if (type == "Split") {
    SplitSpec split;
    const json& pattern = r.object(r.field(p, path, "pattern"), path + ".pattern");
    if (auto it = pattern.find("Regex"); it != pattern.end()) {
      split.pattern = r.string(*it, path + ".pattern.Regex");
    } else if (auto str = pattern.find("String"); str != pattern.end()) {
      split.pattern = r.string(*str, path + ".pattern.String");
      split.literal = true;
    } else {
      r.error(path + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    split.behavior = read_behavior(r, r.field(p, path, "behavior"), path + ".behavior");
    split.invert = r.optional_bool(p, path, "invert", false);
    out.emplace_back(std::move(split));
  } else if (type == "ByteLevel") {
    ByteLevelSpec bl;
    bl.add_prefix_space = r.optional_bool(p, path, "add_prefix_space", true);
    bl.use_regex = r.optional_bool(p, path, "use_regex", true);
    out.emplace_back(bl);
  } else {
    r.unsupported(path, type);
  }
}

// Post-processors compose: each TemplateProcessing wraps what the steps before it produced.
void read_post_processor(const Reader& r, const json& p, const std::string& path, std::vector<TemplateItem>& tmpl) {
  if (p.is_null()) return;
  const std::string type = r.type_of(p, path);
  if (type == "ByteLevel") return;  // only adjusts offsets; ids are unchanged
  if (type == "Sequence") {
    const json& list = r.array(r.field(p, path, "processors"), path + ".processors");
    for (size_t i = 0; i < list.size(); ++i) {
      read_post_processor(r, list[i], fmt::format("{}.processors[{}]", path, i), tmpl);
    }
    return;
  }
  if (type != "TemplateProcessing") r.unsupported(path, type);

  const json& specials = r.object(r.field(p, path, "special_tokens"), path + ".special_tokens");
  const json& single = r.array(r.field(p, path, "single"), path + ".single");
  std::vector<TemplateItem> wrapped;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string item_path = fmt::format("{}.single[{}]", path, i);
    const json& item = r.object(single[i], item_path);
    if (auto seq = item.find("Sequence"); seq != item.end()) {
      const std::string& which = r.string(r.field(r.object(*seq, item_path), item_path, "id"), item_path + ".id");
      if (which != "A") r.error(item_path, fmt::format("sequence '{}' in a single-input template", which));
      if (tmpl.empty()) tmpl.push_back(TemplateItem{true, {}});
      wrapped.insert(wrapped.end(), tmpl.begin(), tmpl.end());
    } else if (auto special = item.find("SpecialToken"); special != item.end()) {
      const std::string& name =
          r.string(r.field(r.object(*special, item_path), item_path + ".SpecialToken", "id"), item_path + ".id");
      auto entry = specials.find(name);
      if (entry == specials.end()) r.error(item_path, fmt::format("'{}' is not in special_tokens", name));
      const std::string entry_path = path + ".special_tokens." + name;
      const json& ids = r.array(r.field(r.object(*entry, entry_path), entry_path, "ids"), entry_path + ".ids");
      TemplateItem fixed;
      for (size_t k = 0; k < ids.size(); ++k)
        fixed.ids.push_back(r.id(ids[k], fmt::format("{}.ids[{}]", entry_path, k)));
      wrapped.push_back(std::move(fixed));
    } else {
      r.error(item_path, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
  }
  tmpl = std::move(wrapped);
}

void check_decoder(const Reader& r, const json& d, const std::string& path) {
  if (d.is_null()) r.error(path, "a ByteLevel decoder is required (qed decodes byte-level BPE only)");
  const std::string type = r.type_of(d, path);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = r.array(r.field(d, path, "decoders"), path + ".decoders");
    if (list.empty()) r.error(path, "empty decoder Sequence");
    for (size_t i = 0; i < list.size(); ++i) check_decoder(r, list[i], fmt::format("{}.decoders[{}]", path, i));
    return;
  }
  r.unsupported(path, type);
}

}  // namespace

TokenizerSpec parse_tokenizer_json(std::string_view json_text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", source, e.what());
  }
  const Reader r(source);
  if (!doc.is_object()) fail("{}: expected a JSON object at the top level", source);
  if (auto v = doc.find("version"); v != doc.end() && !v->is_null() && (!v->is_string() || *v != "1.0")) {
    r.error("version", fmt::format("unknown tokenizer.json version {}", v->dump()));
  }
  for (const char* key : {"truncation", "padding"}) {
    if (auto it = doc.find(key); it != doc.end() && !it->is_null()) {
      r.error(key, "is set; qed's encode never truncates or pads (set it to null)");
    }
  }

  TokenizerSpec spec;
  try {
    read_model(r, r.field(doc, "tokenizer.json", "model"), spec.model);
    if (auto it = doc.find("added_tokens"); it != doc.end() && !it->is_null()) {
      read_added_tokens(r, *it, spec.added_tokens);
    }
    if (auto it = doc.find("normalizer"); it != doc.end()) read_normalizer(r, *it, "normalizer", spec.normalizers);
    if (auto it = doc.find("pre_tokenizer"); it != doc.end()) {
      read_pre_tokenizer(r, *it, "pre_tokenizer", spec.pre_tokenizers);
    }
    if (auto it = doc.find("post_processor"); it != doc.end()) {
      read_post_processor(r, *it, "post_processor", spec.single_template);
    }
    auto decoder = doc.find("decoder");
    check_decoder(r, decoder == doc.end() ? json() : *decoder, "decoder");
  } catch (const json::exception& e) {
    fail("{}: {}", source, e.what());
  }

  // qed runs BPE on raw bytes, so the byte-level mapping must be the last pre-tokenization step (a Split after it
  // would see mapped characters such as 'Ġ', which qed never materialises).
  size_t byte_level_steps = 0;
  for (const auto& step : spec.pre_tokenizers) byte_level_steps += std::holds_alternative<ByteLevelSpec>(step);
  if (byte_level_steps != 1 || !std::holds_alternative<ByteLevelSpec>(spec.pre_tokenizers.back())) {
    r.error("pre_tokenizer", "qed needs exactly one ByteLevel pre-tokenizer, as the last step");
  }
  return spec;
}

}  // namespace qed::tok
