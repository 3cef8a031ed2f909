#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tiny_tokenizer.h"
#include "tokenizer/utf8.h"

namespace qed {
namespace {

using test::id_of;
using test::tiny_tokenizer;
using Ids = std::vector<int32_t>;

const std::string kFffd = "\xEF\xBF\xBD";

// Token ids of the single-byte tokens spelling `bytes`.
Ids byte_ids(const Tokenizer& t, std::string_view bytes) {
  Ids ids;
  for (const char c : bytes) {
    std::string s(1, c);
    for (int32_t id = 0; id < 256; ++id) {
      if (t.token_bytes(id) == s) {
        ids.push_back(id);
        break;
      }
    }
  }
  return ids;
}

TEST(Utf8, LossyReplacesEachMaximalSubpartOnce) {
  auto lossy = [](std::string_view s) {
    std::string out;
    utf8::append_lossy(out, s);
    return out;
  };
  EXPECT_EQ(lossy("a\xE2\x82"
                  "b"),
            "a" + kFffd + "b");                              // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(lossy("\xF0\x80"), kFffd + kFffd);               // F0 80 is no valid prefix: two
  EXPECT_EQ(lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);   // surrogate: every byte
  EXPECT_EQ(lossy("\xC0\xAF"), kFffd + kFffd);               // overlong
  EXPECT_EQ(lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");  // valid emoji untouched
  EXPECT_EQ(lossy("\xF0\x9F\x98"), kFffd);                   // truncated emoji: one
}

TEST(Utf8, IncompleteTailIsOnlyACompletablePrefix) {
  EXPECT_EQ(utf8::incomplete_tail_length("ab\xF0\x9F\x98"), 3u);
  EXPECT_EQ(utf8::incomplete_tail_length("ab\xE2"), 1u);
  EXPECT_EQ(utf8::incomplete_tail_length("ab\xE2\x82\xAC"), 0u);
  EXPECT_EQ(utf8::incomplete_tail_length("ab\xE0\x80"), 0u);  // can never complete
  EXPECT_EQ(utf8::incomplete_tail_length("\x80\x80"), 0u);
}

TEST(Decode, InvalidUtf8FromByteTokensBecomesReplacementCharacters) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.decode(byte_ids(t, "x\xE2\x82y")), "x" + kFffd + "y");
  EXPECT_EQ(t.decode(byte_ids(t, "\xF0\x9F\x98\x80")), "\xF0\x9F\x98\x80");
}

TEST(Decode, SkipSpecialTokensDropsOnlySpecialOnes) {
  const Tokenizer t = tiny_tokenizer();
  const Ids ids = {id_of(t, "<|im_start|>"), id_of(t, "hello"), id_of(t, "<tool_call>")};
  EXPECT_EQ(t.decode(ids, false), "<|im_start|>hello<tool_call>");
  EXPECT_EQ(t.decode(ids, true), "hello<tool_call>");
}

TEST(Decode, SkippedSpecialTokenDoesNotSplitACharacter) {
  // HF concatenates the bytes of the kept tokens first: E2 82 AC around a skipped token is still "€".
  const Tokenizer t = tiny_tokenizer();
  Ids ids = byte_ids(t, "\xE2\x82");
  ids.push_back(id_of(t, "<|im_start|>"));
  const Ids tail = byte_ids(t, "\xAC");
  ids.insert(ids.end(), tail.begin(), tail.end());
  EXPECT_EQ(t.decode(ids, true), "\xE2\x82\xAC");
  EXPECT_EQ(t.decode(ids, false), kFffd + "<|im_start|>" + kFffd);
}

TEST(Decode, AddedTokensGoThroughTheByteLevelDecoderLikeHf) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.decode(Ids{id_of(t, "<my token>")}), "<my token>");  // ' ' is outside the alphabet: kept verbatim
  EXPECT_EQ(t.decode(Ids{id_of(t, "café")}), "caf" + kFffd);       // 'é' is the alphabet's byte 0xE9
}

TEST(Decode, UnknownIdsAreDropped) {
  const Tokenizer t = tiny_tokenizer();
  EXPECT_EQ(t.decode(Ids{-1, id_of(t, "hello"), 1 << 30}), "hello");
}

TEST(IncrementalDetokenizer, HoldsAnEmojiSplitAcrossByteTokens) {
  const Tokenizer t = tiny_tokenizer();
  IncrementalDetokenizer detok(t, false);
  const Ids ids = byte_ids(t, "a\xF0\x9F\x98\x80");
  std::vector<std::string> out;
  for (const int32_t id : ids) out.push_back(detok.push(id));
  EXPECT_EQ(out, (std::vector<std::string>{"a", "", "", "", "\xF0\x9F\x98\x80"}));
  EXPECT_EQ(detok.flush(), "");
}

TEST(IncrementalDetokenizer, EmitsReplacementOnceACharacterCannotComplete) {
  const Tokenizer t = tiny_tokenizer();
  IncrementalDetokenizer detok(t, false);
  const Ids ids = byte_ids(t, "\xE2\x82z");
  EXPECT_EQ(detok.push(ids[0]), "");
  EXPECT_EQ(detok.push(ids[1]), "");
  EXPECT_EQ(detok.push(ids[2]), kFffd + "z");
}

TEST(IncrementalDetokenizer, FlushEmitsATruncatedTailAsReplacement) {
  const Tokenizer t = tiny_tokenizer();
  IncrementalDetokenizer detok(t, false);
  for (const int32_t id : byte_ids(t, "ok\xF0\x9F")) detok.push(id);
  EXPECT_EQ(detok.flush(), kFffd);
}

TEST(IncrementalDetokenizer, ConcatenationEqualsDecodeOnRandomStreams) {
  const Tokenizer t = tiny_tokenizer();
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(t.vocab_size()) - 1);
  for (int trial = 0; trial < 300; ++trial) {
    Ids ids(static_cast<size_t>(rng() % 40));
    for (auto& id : ids) id = pick(rng);
    for (const bool skip : {false, true}) {
      IncrementalDetokenizer detok(t, skip);
      std::string streamed;
      for (const int32_t id : ids) {
        const std::string piece = detok.push(id);
        EXPECT_TRUE(utf8::is_valid(piece));
        streamed += piece;
      }
      streamed += detok.flush();
      EXPECT_EQ(streamed, t.decode(ids, skip));
    }
  }
}

TEST(IncrementalDetokenizer, ConcatenationEqualsDecodeForEncodedText) {
  const Tokenizer t = tiny_tokenizer();
  const std::string text = "héllo wörld 😀👨‍👩‍👧 <|im_start|>中文\n";
  const Ids ids = t.encode(text);
  IncrementalDetokenizer detok(t, false);
  std::string streamed;
  for (const int32_t id : ids) streamed += detok.push(id);
  streamed += detok.flush();
  EXPECT_EQ(streamed, text);
}

}  // namespace
}  // namespace qed
