// Spot checks on the real Qwen3 and Llama-3 files (full parity is tests/python/test_tokenizer_parity.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace qed {
namespace {

std::string shared_tokenizer(const char* name) {
  return std::string(QED_SHARED_DIR) + "/data/tokenizers/" + name;
}

TEST(RealTokenizers, Qwen3SpecialTokensAndConfig) {
  const std::string dir = shared_tokenizer("qwen3");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " not present";
  const Tokenizer t = Tokenizer::from_dir(dir);
  EXPECT_EQ(t.token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(t.token_to_id("<tool_call>"), 151657);
  EXPECT_EQ(t.eos_token_id(), 151645);
  EXPECT_FALSE(t.bos_token_id().has_value());
  EXPECT_EQ(t.encode("<|im_start|>user"), (std::vector<int32_t>{151644, 872}));
  const std::string text = "Compute $\\frac{1}{2}$ → \\boxed{0.5} 😀";
  EXPECT_EQ(t.decode(t.encode(text)), text);
}

TEST(RealTokenizers, Llama3IgnoresMergesForWholeWords) {
  const std::string dir = shared_tokenizer("llama3");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " not present";
  const Tokenizer t = Tokenizer::from_dir(dir);
  EXPECT_EQ(t.bos_token_id(), 128000);
  EXPECT_EQ(t.encode("<|begin_of_text|>"), (std::vector<int32_t>{128000}));
  const std::string text = "The answer is 1234567 and it's 'LL be fine.\n\n\n";
  EXPECT_EQ(t.decode(t.encode(text)), text);
}

}  // namespace
}  // namespace qed
