#pragma once
// What `qed bench serve` sends: prompts from a jsonl dataset or random words, and the AIMO preset — the NeMo-Skills
// demo notebook's scenario (one problem, 12 generations with seeds 0..11, temperature 0.7, up to 20000 tokens,
// code execution on with at most 2 calls, cancelled once 10 are complete).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench/serve_load.h"

namespace qed::bench {

// NeMo-Skills generic/math: the prompt of OpenMath-Nemotron-14B-Kaggle (and of the demo model's plain mode).
std::string generic_math_prompt(const std::string& problem);

struct PromptSource {
  std::string dataset = "random";  // "random" or a .jsonl path: rows with "prompt" (sent as is) or "problem"
  int random_words = 32;           // random: prompt length in words
  uint64_t seed = 0;
};

// `count` prompts, cycling through the dataset; "problem" rows are wrapped in generic_math_prompt. Throws
// qed::Error on an unreadable file, a row that is not JSON, or a dataset without usable rows.
std::vector<std::string> load_prompts(const PromptSource& source, int count);

struct RequestShape {
  bool chat = false;  // chat: the prompt is the user message; completions: the prompt text
  std::string model;  // empty: the server's default
  int max_tokens = 128;
  double temperature = 0;
  bool ignore_eos = false;
  std::optional<uint64_t> seed;  // each request i gets seed + i
};

std::vector<LoadRequest> make_requests(const std::vector<std::string>& prompts, const RequestShape& shape);

struct AimoPreset {
  std::string problem;
  int samples = 12;        // seeds 0..samples-1
  int keep_first = 10;     // qed.stop_after_first over the group
  int max_tokens = 20000;  // clamped to the context the server leaves after the prompt
  double temperature = 0.7;
  bool tir = true;  // qed.tir with max_code_executions
  // Not the notebook's: samples run to max_tokens whatever they generate (random weights' EOS comes at random
  // steps, which makes a latency run's length a lottery).
  bool ignore_eos = false;
  int max_code_executions = 2;
  std::string group;  // qed.group shared by the samples
};

// One request per sample (seed = its index) in one early-stop group, as the notebook sends one per generation.
std::vector<LoadRequest> make_aimo_requests(const AimoPreset& preset, const std::string& model, int max_tokens);

// The notebook's report: number of generations (samples that finished, not cut), total time, batch tokens/s,
// mean ± std of per-request tokens/s, plus each sample's boxed answer and the majority answer.
nlohmann::json summarize_aimo(const LoadResult& result);

}  // namespace qed::bench
