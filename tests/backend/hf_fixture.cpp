#include "hf_fixture.h"

#include <nlohmann/json.hpp>

#include "core/mmap_file.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace qed::testing {

std::vector<std::string> hf_fixture_names() {
  return {"qwen2_gqa_bias", "qwen2_tied_mha", "llama3_rope_scaled"};
}

HfFixture load_hf_fixture(const std::string& name) {
  HfFixture fixture;
  fixture.name = name;
  fixture.dir = std::string(QED_SOURCE_DIR) + "/tests/fixtures/hf/" + name;
  const auto json = nlohmann::json::parse(read_text_file(fixture.dir + "/fixture.json"));
  fixture.rotary_inv_freq = json.at("rotary_inv_freq").get<std::vector<float>>();
  SafetensorsFile logits(fixture.dir + "/logits.safetensors");
  const auto& prompts = json.at("prompts");
  for (size_t i = 0; i < prompts.size(); ++i) {
    HfPrompt prompt;
    prompt.ids = prompts[i].get<std::vector<int32_t>>();
    prompt.greedy = json.at("greedy")[i].get<std::vector<int32_t>>();
    const TensorInfo& tensor = logits.tensors().at("logits_" + std::to_string(i));
    fixture.vocab = int(tensor.shape.at(1));
    prompt.logits = tensor_to_f32(tensor);
    fixture.prompts.push_back(std::move(prompt));
  }
  return fixture;
}

}  // namespace qed::testing
