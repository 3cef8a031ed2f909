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

TEST(Bpe, LowerRankMergeWinsOverLeftmostPair) {
  const Tokenizer t = tiny_tokenizer();
  // ("b","c") has rank 0 and ("a","b") rank 1: "abc" → a + bc, not ab + c.
  EXPECT_EQ(t.encode("abc"), (Ids{id_of(t, "a"), id_of(t, "bc")}));
}

TEST(Bpe, EqualRankOverlappingPairsMergeLeftFirst) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.encode("aaaaa"), (Ids{id_of(t, "aaaa"), id_of(t, "a")}));
  EXPECT_EQ(t.encode("aaa"), (Ids{id_of(t, "aa"), id_of(t, "a")}));
}

TEST(Bpe, MergesChainIntoWholeWords) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.encode("hello world"), (Ids{id_of(t, "hello"), id_of(t, "Ġworld")}));
}

TEST(Bpe, MergesInArrayFormMatchStringForm) {
  auto doc = tiny_tokenizer_json();
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& m : doc["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  doc["model"]["merges"] = pairs;
  const Tokenizer from_pairs = tokenizer_from(doc);
  const Tokenizer from_strings = tiny_tokenizer();
  for (const char* text : {"abc", "aaaaa", "hello world", "hellohello  worldld"}) {
    EXPECT_EQ(from_pairs.encode(text), from_strings.encode(text)) << text;
  }
}

TEST(Bpe, IgnoreMergesEmitsWholeVocabWords) {
  auto doc = tiny_tokenizer_json();
  const Tokenizer merging = tokenizer_from(doc);
  EXPECT_EQ(merging.encode("xyz"), (Ids{id_of(merging, "x"), id_of(merging, "y"), id_of(merging, "z")}));
  doc["model"]["ignore_merges"] = true;
  const Tokenizer whole = tokenizer_from(doc);
  EXPECT_EQ(whole.encode("xyz"), (Ids{id_of(whole, "xyz")}));
}

TEST(Bpe, LongWordMergesAndRoundTrips) {
  const Tokenizer t = tiny_tokenizer();
  std::string word;
  for (int i = 0; i < 20000; ++i) word += "aaaac";
  const Ids ids = t.encode(word);
  EXPECT_EQ(ids.size(), 2u * 20000u);  // every "aaaa" + "c"
  EXPECT_EQ(t.decode(ids), word);
}

TEST(Bpe, RepeatedWordsGiveTheSameIdsAsFirstTime) {
  // The second encode of each word is served by the word cache.
  const Tokenizer t = tiny_tokenizer();
  const Ids first = t.encode("hello abc aaaaa");
  EXPECT_EQ(t.encode("hello abc aaaaa"), first);
}

TEST(Bpe, UnknownBytesBecomeUnkAndFuseWhenAsked) {
  auto doc = tiny_tokenizer_json();
  auto& vocab = doc["model"]["vocab"];
  vocab.erase("Ã");  // byte 0xC3
  vocab.erase("©");  // byte 0xA9: "é" is C3 A9
  vocab["<unk>"] = 290;
  doc["model"]["unk_token"] = "<unk>";
  const Tokenizer separate = tokenizer_from(doc);
  EXPECT_EQ(separate.encode("xé"), (Ids{id_of(separate, "x"), 290, 290}));
  doc["model"]["fuse_unk"] = true;
  const Tokenizer fused = tokenizer_from(doc);
  EXPECT_EQ(fused.encode("xé"), (Ids{id_of(fused, "x"), 290}));
}

TEST(Bpe, NormalizerComposesBeforeBpe) {
  const Tokenizer t = tiny_tokenizer();
  // NFC turns e + U+0301 into é (C3 A9), which is two byte tokens.
  EXPECT_EQ(t.encode("e\xCC\x81"), (Ids{id_of(t, "Ã"), id_of(t, "©")}));
}

TEST(Bpe, InvalidUtf8InputIsReplacedLikePythonReplaceDecoding) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.encode("a\xE2\x82z"), t.encode("a\xEF\xBF\xBDz"));
  EXPECT_EQ(t.encode("\xF0\x80"), t.encode("\xEF\xBF\xBD\xEF\xBF\xBD"));
}

}  // namespace
}  // namespace qed
