#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "tiny_tokenizer.h"

namespace qed {
namespace {

TEST(Concurrency, ThreadsSharingOneTokenizerGetSequentialResults) {
  // encode() is const and shares the word cache between threads; results must not depend on interleaving.
  const Tokenizer t = test::tiny_tokenizer();
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back("hello world " + std::to_string(i * 7919) + " aaaa" +
                    std::string(static_cast<size_t>(i % 13), 'a') + " <|im_start|>caf\xC3\xA9 abc\n");
  }
  const Tokenizer reference = test::tiny_tokenizer();  // its own word cache, filled by one thread
  std::vector<std::vector<int32_t>> expected;
  for (const auto& text : texts) expected.push_back(reference.encode(text));

  std::vector<std::vector<std::vector<int32_t>>> got(4, std::vector<std::vector<int32_t>>(texts.size()));
  std::vector<std::thread> threads;
  for (size_t w = 0; w < got.size(); ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = 0; i < texts.size(); ++i) {
        const size_t k = (i + w * 37) % texts.size();  // a different starting point per thread
        got[w][k] = t.encode(texts[k]);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& per_thread : got) EXPECT_EQ(per_thread, expected);
}

}  // namespace
}  // namespace qed
