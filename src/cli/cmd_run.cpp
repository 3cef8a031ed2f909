// qed run "problem": solve one math problem with the bundled demo model on the CPU, the way it was trained
// (models/demo/README.md): the bare problem as the user message, `<tool_call>` code run in a sandbox this command
// starts itself (`qed sandbox` as a child process, stopped on exit, error or Ctrl-C), the reasoning streamed to
// stdout, and a last line "Answer: <the last \boxed{}>". Generation holds at `</tool_call>` with its KV cache
// kept and resumes with the output block, exactly as `qed serve --sandbox` does.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "cli/commands.h"
#include "cli/demo_model.h"
#include "core/error.h"
#include "engine/engine.h"
#include "engine/token_decoder.h"
#include "tir/boxed_answer.h"
#include "tir/code_tags.h"
#include "tir/sandbox_process.h"
#include "tir/tool_loop.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace qed::cli {
namespace {

struct RunOptions {
  std::string problem;
  std::string model;
  bool no_tools = false;
  int max_tokens = 1024;
  float temperature = 0.0f;
  std::optional<uint64_t> seed;
  std::string sandbox;  // use this one instead of starting a child
  std::string python;   // the child sandbox's interpreter (its --python), if given
  int threads = 0;
  tir::ToolLimits limits;
};

// NeMo-Skills' generic/math prompt: what the demo model was trained on for answers without code.
constexpr const char* kNoToolsPrompt =
    "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n\n";

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) {
  g_interrupted = true;
}

std::filesystem::path self_exe() {
  return std::filesystem::read_symlink("/proc/self/exe");
}

void run_run(RunOptions opt) {
  if (opt.problem.empty()) fail("qed run: the problem text is empty");
  if (opt.max_tokens < 1) fail("--max-tokens must be >= 1, got {}", opt.max_tokens);
  if (opt.model.empty()) opt.model = find_demo_model_dir();
  if (!std::filesystem::exists(opt.model + "/tokenizer.json")) fail("{}: no tokenizer.json", opt.model);
  const Tokenizer tokenizer = Tokenizer::from_dir(opt.model);
  const ChatTemplate chat = ChatTemplate::from_dir(opt.model);
  const std::string user = opt.no_tools ? kNoToolsPrompt + opt.problem : opt.problem;
  const std::vector<int32_t> prompt = tokenizer.encode(chat.render({{"user", user}}), /*add_special_tokens=*/false);

  // The sandbox first: a failure to start (no user namespaces, ...) is reported before the model loads.
  std::unique_ptr<tir::SandboxProcess> child;
  std::optional<tir::SandboxAddress> sandbox;
  if (!opt.no_tools) {
    if (!opt.sandbox.empty()) {
      sandbox = tir::parse_sandbox_url(opt.sandbox);
    } else {
      try {
        std::vector<std::string> argv{self_exe().string(), "sandbox", "--host", "127.0.0.1", "--port", "0",
                                      "--workers",         "1"};
        if (!opt.python.empty()) argv.insert(argv.end(), {"--python", opt.python});
        child = std::make_unique<tir::SandboxProcess>(std::move(argv));
      } catch (const Error& e) {
        fail(
            "qed run: could not start the code sandbox (use --no-tools to solve without code, or --sandbox URL): "
            "{}",
            e.what());
      }
      sandbox = child->address();
    }
  }

  CpuBackendOptions backend_options;
  backend_options.num_threads = opt.threads;
  backend_options.kv_cache_bytes = size_t(64) << 20;
  auto backend = CpuBackend::load(opt.model, backend_options);
  Engine engine(*backend, EngineConfig{}, tokenizer_decoder_factory(tokenizer));

  SamplingParams params;
  params.temperature = opt.temperature;
  params.max_tokens = std::min(opt.max_tokens, engine.max_model_len() - static_cast<int>(prompt.size()));
  params.seed = opt.seed ? *opt.seed : std::random_device{}();
  params.skip_special_tokens = true;
  const tir::CodeTags tags;
  if (sandbox) params.hold = {tags.code_end};
  if (params.max_tokens < 1) fail("qed run: the problem leaves no room in the model's context");

  std::string text;
  bool held = false;
  RequestCallbacks callbacks;
  callbacks.on_token = [&](const TokenEvent& event) {
    std::fputs(event.text.c_str(), stdout);
    std::fflush(stdout);
    text += event.text;
    held = held || event.held;
  };
  const RequestId id = engine.add_request(prompt, params, callbacks);
  std::optional<tir::ToolLoop> tools;
  if (sandbox) tools.emplace(*sandbox, opt.limits, tags);

  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  while (engine.has_unfinished()) {
    if (g_interrupted) {
      engine.abort(id);
      break;
    }
    if (held) {
      held = false;
      // Blocking is fine here: this is the only sequence.
      if (const auto block = tools->run(text)) {
        engine.resume(id, 0, tokenizer.encode(*block, /*add_special_tokens=*/false));
      } else {
        engine.stop_held(id, 0);
      }
      continue;
    }
    engine.step();
  }
  if (tools) tools->close();
  std::fputs("\n", stdout);
  if (g_interrupted) fail("qed run: interrupted");
  const auto results = engine.take_finished();
  if (!results.empty() && !results[0].error.empty()) fail("qed run: {}", results[0].error);
  const auto answer = tir::last_boxed(text);
  fmt::print("Answer: {}\n", answer ? *answer : "(no \\boxed{} answer)");
  std::fflush(stdout);
}

}  // namespace

void register_run(CLI::App& app) {
  auto opt = std::make_shared<RunOptions>();
  auto* cmd =
      app.add_subcommand("run", "Solve a math problem with the demo model (CPU), running its code in a sandbox");
  cmd->add_option("problem", opt->problem, "The problem, e.g. \"What is 7^2024 mod 1000?\"")->required();
  cmd->add_option("--model", opt->model, "Model directory (default: $QED_DEMO_MODEL or the bundled models/demo)");
  cmd->add_flag("--no-tools", opt->no_tools, "Answer without code execution (and without starting a sandbox)");
  cmd->add_option("--max-tokens", opt->max_tokens, "Generated tokens at most (tool output not counted)")
      ->capture_default_str();
  cmd->add_option("--temperature", opt->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Sampling seed (default: random)");
  cmd->add_option("--sandbox", opt->sandbox, "Use a running sandbox at this URL instead of starting one");
  cmd->add_option("--python", opt->python, "Interpreter the started sandbox runs code with (its --python)");
  cmd->add_option("--threads", opt->threads, "CPU threads for the model (0 = all)")->capture_default_str();
  cmd->add_option("--max-code-executions", opt->limits.max_code_executions, "Tool calls at most")
      ->capture_default_str();
  cmd->add_option("--code-timeout", opt->limits.code_timeout_s, "Seconds per tool call")->capture_default_str();
  cmd->add_option("--max-code-output-chars", opt->limits.max_code_output_chars,
                  "Characters of stdout (and of stderr) shown back to the model")
      ->capture_default_str();
  cmd->callback([opt] { run_run(*opt); });
}

}  // namespace qed::cli
