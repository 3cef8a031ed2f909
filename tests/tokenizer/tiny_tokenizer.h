#pragma once
// The hand-made tokenizer of tests/tokenizer/data (see make_tiny_tokenizer.py), as JSON tests can edit.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tokenizer/tokenizer.h"

namespace qed::test {

inline nlohmann::json tiny_tokenizer_json() {
  std::ifstream in(std::string(QED_SOURCE_DIR) + "/tests/tokenizer/data/tiny_tokenizer.json");
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

inline Tokenizer tokenizer_from(const nlohmann::json& doc) {
  return Tokenizer::from_json_text(doc.dump(), "tiny.json");
}

inline Tokenizer tiny_tokenizer() {
  return tokenizer_from(tiny_tokenizer_json());
}

// Id of a token by its tokenizer.json string; fails the test (throws) if absent.
inline int32_t id_of(const Tokenizer& t, const std::string& token) {
  auto id = t.token_to_id(token);
  if (!id) throw std::runtime_error("no token " + token);
  return *id;
}

}  // namespace qed::test
