#pragma once
// The HF reference fixtures of tests/fixtures/hf/<name>/ (made by tools/make_hf_fixtures.py): a tiny bf16 model,
// the prompts, HF's fp32 logits at every prompt position and HF's 24-token greedy continuations.
#include <cstdint>
#include <string>
#include <vector>

namespace qed::testing {

struct HfPrompt {
  std::vector<int32_t> ids;
  std::vector<float> logits;  // ids.size() × vocab, HF float32
  std::vector<int32_t> greedy;
};

struct HfFixture {
  std::string name;
  std::string dir;
  int vocab = 0;
  std::vector<float> rotary_inv_freq;
  std::vector<HfPrompt> prompts;
};

std::vector<std::string> hf_fixture_names();
HfFixture load_hf_fixture(const std::string& name);

}  // namespace qed::testing
