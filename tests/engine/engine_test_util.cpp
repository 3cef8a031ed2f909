#include "engine_test_util.h"

#include <random>
#include <stdexcept>

namespace qed::testing {

std::map<RequestId, RequestResult> run_to_completion(Engine& engine) {
  std::map<RequestId, RequestResult> results;
  int guard = 0;
  while (engine.has_unfinished()) {
    engine.step();
    if (++guard > 1000000) throw std::runtime_error("engine did not finish");
  }
  for (auto& r : engine.take_finished()) results.emplace(r.id, std::move(r));
  return results;
}

std::vector<RequestResult> run_batched(Engine& engine, const std::vector<Job>& jobs) {
  std::vector<RequestId> ids;
  for (const Job& job : jobs) ids.push_back(engine.add_request(job.prompt, job.params));
  auto results = run_to_completion(engine);
  std::vector<RequestResult> ordered;
  for (RequestId id : ids) ordered.push_back(std::move(results.at(id)));
  return ordered;
}

std::vector<std::vector<int32_t>> generated_tokens(const std::vector<RequestResult>& results) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& r : results) {
    for (const auto& s : r.sequences) out.push_back(s.token_ids);
  }
  return out;
}

std::string letters_of(int32_t token) {
  return std::string(static_cast<size_t>(1 + token % 3), static_cast<char>('a' + token % 26));
}

namespace {
class LetterDecoder final : public TokenDecoder {
 public:
  std::string push(int32_t token) override { return letters_of(token); }
  std::string flush() override { return {}; }
};
}  // namespace

TokenDecoderFactory letter_decoder_factory() {
  return [](bool) { return std::make_unique<LetterDecoder>(); };
}

std::vector<int32_t> random_prompt(uint64_t seed, int length, int vocab) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(1, vocab - 1);
  std::vector<int32_t> prompt(static_cast<size_t>(length));
  for (auto& t : prompt) t = dist(rng);
  return prompt;
}

}  // namespace qed::testing
