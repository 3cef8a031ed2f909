// qed generate: one prompt through the engine (paged KV, scheduler) on the CPU reference backend, sampling flags
// mapping 1:1 onto SamplingParams. tests/engine checks the engine against SimpleGenerator token for token.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backend/factory/backend_factory.h"
#include "backend/sampling.h"
#include "cli/backend_flags.h"
#include "cli/commands.h"
#include "cli/prompt_ids.h"
#include "cli/spec_options.h"
#include "core/error.h"
#include "engine/engine.h"
#include "engine/token_decoder.h"
#include "model/model_config.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace qed::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt;
  std::string prompt_ids;
  bool text_prompt = false;  // --prompt given (else --prompt-ids)
  bool chat = false;
  bool stream = false;
  bool json = false;
  int threads = 0;
  BackendFlags backend;
  std::optional<uint64_t> seed;
  SamplingParams sampling;
  SpecOptions spec;
};

void run_generate(const GenerateOptions& opt) {
  check_sampling_params(opt.sampling);
  if (opt.sampling.max_tokens < 0) fail("--max-tokens must be >= 0, got {}", opt.sampling.max_tokens);
  const ModelConfig config = ModelConfig::from_file(opt.model + "/config.json");

  // The tokenizer is needed for text in or out; with --prompt-ids and no tokenizer.json the output is token ids.
  std::optional<Tokenizer> tokenizer;
  const bool has_tokenizer = std::filesystem::exists(opt.model + "/tokenizer.json");
  if (opt.text_prompt || opt.stream || has_tokenizer) {
    if (!has_tokenizer) fail("{}: no tokenizer.json (needed for --prompt and --stream; use --prompt-ids)", opt.model);
    tokenizer.emplace(Tokenizer::from_dir(opt.model));
  }

  std::vector<int32_t> prompt;
  if (!opt.text_prompt) {
    if (opt.chat) fail("--chat needs a text --prompt, not --prompt-ids");
    prompt = parse_prompt_ids(opt.prompt_ids);
  } else if (opt.chat) {
    const std::string text = ChatTemplate::from_dir(opt.model).render({{"user", opt.prompt}});
    prompt = tokenizer->encode(text, /*add_special_tokens=*/false);  // the template already has BOS if any
  } else {
    prompt = tokenizer->encode(opt.prompt, /*add_special_tokens=*/true);  // as HF tokenizer(prompt)
  }
  if (prompt.empty()) fail("the prompt encodes to no tokens");
  for (int32_t id : prompt) {
    if (id >= config.vocab_size)
      fail("prompt token id {} is outside the model's vocabulary [0, {})", id, config.vocab_size);
  }

  BackendSelection selection = backend_selection(opt.backend);
  selection.threads = opt.threads;
  // Enough blocks for the prompt and every generated token, plus one so a block boundary never starves the request.
  // Draft tokens need slots beyond the last accepted one.
  const size_t slots = prompt.size() + size_t(opt.sampling.max_tokens) +
                       (opt.spec.method == "none" ? 0 : size_t(opt.spec.num_draft_tokens));
  selection.num_blocks = int((slots + size_t(selection.block_size) - 1) / size_t(selection.block_size)) + 1;
  EngineConfig engine_config;
  selection.max_batched_tokens = engine_config.scheduler.max_num_batched_tokens;
  const std::unique_ptr<Backend> backend = make_backend(opt.model, selection);

  SamplingParams params = opt.sampling;
  params.seed = opt.seed ? *opt.seed : std::random_device{}() * 0x100000001ull ^ std::random_device{}();
  std::vector<int32_t> generated;
  std::string finish_reason = "length";
  nlohmann::json spec_stats;
  if (params.max_tokens > 0) {  // the engine refuses empty requests; zero tokens is a valid (empty) generation
    engine_config.drafter = make_drafter(opt.spec, opt.model);
    Engine engine(*backend, engine_config, tokenizer ? tokenizer_decoder_factory(*tokenizer) : TokenDecoderFactory{});
    RequestCallbacks callbacks;
    if (opt.stream) {
      callbacks.on_token = [](const TokenEvent& event) {
        std::fputs(event.text.c_str(), stdout);
        std::fflush(stdout);
      };
    }
    engine.add_request(prompt, params, callbacks);
    while (engine.has_unfinished()) engine.step();
    std::vector<RequestResult> results = engine.take_finished();
    if (results.size() != 1 || results[0].sequences.size() != 1) fail("qed generate: the engine returned no result");
    if (!results[0].error.empty()) fail("qed generate: {}", results[0].error);
    generated = std::move(results[0].sequences[0].token_ids);
    if (opt.spec.method != "none") spec_stats = spec_stats_json(opt.spec, engine.stats());
    finish_reason = finish_reason_name(results[0].sequences[0].finish_reason);
  }

  const std::string text = tokenizer ? tokenizer->decode(generated, opt.sampling.skip_special_tokens) : std::string();
  if (opt.stream) std::fputs("\n", stdout);
  if (opt.json) {
    nlohmann::json out = {{"text", text}, {"token_ids", generated}, {"finish_reason", finish_reason}};
    if (!spec_stats.is_null()) out["speculation"] = spec_stats;
    fmt::print("{}\n", out.dump());
  } else if (!opt.stream) {
    fmt::print("{}\n", tokenizer ? text : fmt::format("{}", fmt::join(generated, " ")));
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto opt = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand(
      "generate", "Generate a continuation of one prompt through the engine (CPU reference or CUDA backend)");
  cmd->add_option("--model", opt->model, "Model directory (config.json, *.safetensors, tokenizer.json)")->required();
  auto* prompt = cmd->add_option("--prompt", opt->prompt, "Prompt text (needs the model's tokenizer.json)");
  auto* ids = cmd->add_option("--prompt-ids", opt->prompt_ids, "Prompt as token ids: 1,2,3");
  prompt->excludes(ids);
  cmd->add_flag("--chat", opt->chat, "Wrap the prompt as one user message with the model's chat template");
  SamplingParams& s = opt->sampling;
  cmd->add_option("--max-tokens", s.max_tokens, "Tokens to generate at most")->capture_default_str();
  cmd->add_option("--temperature", s.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", s.top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--top-k", s.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--min-p", s.min_p, "Drop tokens below min-p × the top probability")->capture_default_str();
  cmd->add_option("--repetition-penalty", s.repetition_penalty, "HF repetition penalty")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Sampling seed (default: random)");
  cmd->add_flag("--ignore-eos", s.ignore_eos, "Do not stop at the model's EOS tokens");
  cmd->add_flag("--stream", opt->stream, "Print text as it is generated");
  cmd->add_flag("--json", opt->json, "Print {\"text\", \"token_ids\", \"finish_reason\"} of the generated part");
  cmd->add_option("--threads", opt->threads, "CPU threads (0 = all)")->capture_default_str();
  add_spec_options(*cmd, opt->spec);
  add_backend_flags(cmd, opt->backend);
  cmd->callback([opt, prompt, ids] {
    if (prompt->count() == 0 && ids->count() == 0) fail("qed generate: give --prompt TEXT or --prompt-ids 1,2,3");
    opt->text_prompt = prompt->count() > 0;
    run_generate(*opt);
  });
}

}  // namespace qed::cli
