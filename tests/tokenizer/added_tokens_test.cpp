#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tiny_tokenizer.h"

namespace qed {
namespace {

using test::id_of;
using test::tiny_tokenizer;
using test::tiny_tokenizer_json;
using test::tokenizer_from;
using Ids = std::vector<int32_t>;

TEST(AddedTokens, SpecialAndPlainTokensSplitTheText) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.encode("<|im_start|>hi<tool_call>"),
            (Ids{id_of(t, "<|im_start|>"), id_of(t, "h"), id_of(t, "i"), id_of(t, "<tool_call>")}));
}

TEST(AddedTokens, PartialTokenTextIsPlainText) {
  const Tokenizer t = tiny_tokenizer();
  const Ids ids = t.encode("<|im_start|");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), id_of(t, "<|im_start|>")), 0);
  EXPECT_EQ(t.decode(ids), "<|im_start|");
}

TEST(AddedTokens, LstripAndRstripSwallowSurroundingWhitespace) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.encode("a \t<mask>  b"), (Ids{id_of(t, "a"), id_of(t, "<mask>"), id_of(t, "b")}));
}

TEST(AddedTokens, SingleWordTokensMatchOnlyBetweenNonWordCharacters) {
  const Tokenizer t = tiny_tokenizer();
  const int32_t w = id_of(t, "[W]");
  const Ids spaced = t.encode("x [W] y");
  EXPECT_EQ(std::count(spaced.begin(), spaced.end(), w), 1);
  const Ids glued = t.encode("x[W] y");
  EXPECT_EQ(std::count(glued.begin(), glued.end(), w), 0);
}

TEST(AddedTokens, NormalizedTokensMatchNormalizedText) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.encode("cafe\xCC\x81"), (Ids{id_of(t, "café")}));  // NFC makes it "café"
}

TEST(AddedTokens, LongestTokenWinsAtTheSamePosition) {
  auto doc = tiny_tokenizer_json();
  const int next = 400;
  doc["added_tokens"].push_back({{"id", next},
                                 {"content", "<a>"},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", false}});
  doc["added_tokens"].push_back({{"id", next + 1},
                                 {"content", "<a><b>"},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", false}});
  const Tokenizer t = tokenizer_from(doc);
  EXPECT_EQ(t.encode("<a><b>"), (Ids{next + 1}));
  EXPECT_EQ(t.encode("<a><c>").front(), next);
}

TEST(AddedTokens, TemplateProcessingAddsBosOnlyWithSpecialTokens) {
  auto doc = tiny_tokenizer_json();
  const int bos = id_of(tiny_tokenizer(), "<|endoftext|>");
  doc["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       {{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}},
        {{"type", "TemplateProcessing"},
         {"single",
          {{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}},
           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
         {"pair", nlohmann::json::array()},
         {"special_tokens",
          {{"<|endoftext|>", {{"id", "<|endoftext|>"}, {"ids", {bos}}, {"tokens", {"<|endoftext|>"}}}}}}}}}};
  const Tokenizer t = tokenizer_from(doc);
  const Ids plain = t.encode("hello");
  Ids with_bos = {bos};
  with_bos.insert(with_bos.end(), plain.begin(), plain.end());
  EXPECT_EQ(t.encode("hello", true), with_bos);
  EXPECT_EQ(t.encode("", true), (Ids{bos}));
}

TEST(AddedTokens, SpecialFlagsAndLookups) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_TRUE(t.is_special(id_of(t, "<|im_start|>")));
  EXPECT_FALSE(t.is_special(id_of(t, "<tool_call>")));
  EXPECT_FALSE(t.is_special(id_of(t, "hello")));
  EXPECT_EQ(t.id_to_token(id_of(t, "Ġworld")), "Ġworld");
  EXPECT_EQ(t.token_bytes(id_of(t, "Ġworld")), " world");
  EXPECT_FALSE(t.token_to_id("not a token").has_value());
  EXPECT_EQ(t.vocab_size(), static_cast<size_t>(id_of(t, "<my token>") + 1));
}

}  // namespace
}  // namespace qed
