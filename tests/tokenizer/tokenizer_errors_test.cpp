#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "tiny_tokenizer.h"

namespace qed {
namespace {

using test::tiny_tokenizer_json;

// The message of the qed::Error that loading `doc` throws ("" if it loads).
std::string load_error(const nlohmann::json& doc) {
  try {
    Tokenizer::from_json_text(doc.dump(), "broken.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string load_error_text(const std::string& text) {
  try {
    Tokenizer::from_json_text(text, "broken.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerErrors, NotJsonNamesTheFile) {
  EXPECT_NE(load_error_text("{\"model\": ").find("broken.json: not valid JSON"), std::string::npos);
}

TEST(TokenizerErrors, MissingModelIsNamed) {
  auto doc = tiny_tokenizer_json();
  doc.erase("model");
  EXPECT_NE(load_error(doc).find("missing field 'model'"), std::string::npos);
}

TEST(TokenizerErrors, UnknownComponentTypesNameTypeAndFile) {
  struct Case {
    const char* field;
    nlohmann::json value;
    const char* type;
  };
  const Case cases[] = {
      {"model", {{"type", "WordPiece"}}, "WordPiece"},
      {"normalizer", {{"type", "Lowercase"}}, "Lowercase"},
      {"pre_tokenizer", {{"type", "Whitespace"}}, "Whitespace"},
      {"post_processor", {{"type", "RobertaProcessing"}}, "RobertaProcessing"},
      {"decoder", {{"type", "WordPiece"}}, "WordPiece"},
  };
  for (const Case& c : cases) {
    auto doc = tiny_tokenizer_json();
    doc[c.field] = c.value;
    const std::string message = load_error(doc);
    EXPECT_NE(message.find("broken.json"), std::string::npos) << message;
    EXPECT_NE(message.find(std::string("'") + c.type + "'"), std::string::npos) << message;
    EXPECT_NE(message.find(c.field), std::string::npos) << message;
  }
}

TEST(TokenizerErrors, MergeOfUnknownTokenNamesTheMerge) {
  auto doc = tiny_tokenizer_json();
  doc["model"]["merges"].push_back("q zz");
  const std::string message = load_error(doc);
  EXPECT_NE(message.find("'zz' is not in model.vocab"), std::string::npos) << message;
}

TEST(TokenizerErrors, MalformedMergeString) {
  auto doc = tiny_tokenizer_json();
  doc["model"]["merges"][0] = "abc";
  EXPECT_NE(load_error(doc).find("model.merges[0]"), std::string::npos);
}

TEST(TokenizerErrors, ByteFallbackIsRejected) {
  auto doc = tiny_tokenizer_json();
  doc["model"]["byte_fallback"] = true;
  EXPECT_NE(load_error(doc).find("byte_fallback"), std::string::npos);
}

TEST(TokenizerErrors, BadRegexNamesThePattern) {
  auto doc = tiny_tokenizer_json();
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  const std::string message = load_error(doc);
  EXPECT_NE(message.find("(unclosed"), std::string::npos) << message;
}

TEST(TokenizerErrors, PreTokenizerWithoutByteLevelIsRejected) {
  auto doc = tiny_tokenizer_json();
  doc["pre_tokenizer"]["pretokenizers"].erase(1);
  EXPECT_NE(load_error(doc).find("ByteLevel"), std::string::npos);
}

TEST(TokenizerErrors, NullDecoderIsRejected) {
  auto doc = tiny_tokenizer_json();
  doc["decoder"] = nullptr;
  EXPECT_NE(load_error(doc).find("decoder"), std::string::npos);
}

TEST(TokenizerErrors, WrongTypesAndBadIdsAreNamed) {
  auto doc = tiny_tokenizer_json();
  doc["model"]["vocab"]["a"] = "one";
  EXPECT_NE(load_error(doc).find("model.vocab.a"), std::string::npos);
  doc = tiny_tokenizer_json();
  doc["added_tokens"][0]["id"] = -3;
  EXPECT_NE(load_error(doc).find("added_tokens[0].id"), std::string::npos);
  doc = tiny_tokenizer_json();
  doc["added_tokens"][0]["id"] = 2000000000;
  EXPECT_NE(load_error(doc).find("far beyond"), std::string::npos);
}

TEST(TokenizerErrors, MissingFilesAndDirectoriesAreNamed) {
  const std::string missing = "/nonexistent/qed-tokenizer";
  try {
    Tokenizer::from_dir(missing);
    FAIL() << "loaded a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos);
  }
  try {
    Tokenizer::from_file(missing + "/tokenizer.json");
    FAIL() << "loaded a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
}

TEST(TokenizerDir, ReadsBosAndEosFromTokenizerConfig) {
  const auto dir = std::filesystem::temp_directory_path() / "qed_tokenizer_dir_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << tiny_tokenizer_json().dump();
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": {"content": "<|endoftext|>"}, "eos_token": "<|im_start|>"})";
  const Tokenizer t = Tokenizer::from_dir(dir.string());
  EXPECT_EQ(t.bos_token_id(), t.token_to_id("<|endoftext|>"));
  EXPECT_EQ(t.eos_token_id(), t.token_to_id("<|im_start|>"));

  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|nope|>"})";
  try {
    Tokenizer::from_dir(dir.string());
    FAIL() << "accepted an unknown eos_token";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<|nope|>"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qed
