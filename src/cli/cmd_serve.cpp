// qed serve: the OpenAI-compatible HTTP server (src/server/openai_server.h) over the engine, on a checkpoint
// (--model) or on random weights of an HF config's shape with a tokenizer directory's tokenizer (--config +
// --tokenizer: latency measurements of a shape without its checkpoint). Flags follow `vllm serve` where they exist.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "backend/factory/backend_factory.h"
#include "cli/backend_flags.h"
#include "cli/commands.h"
#include "cli/demo_model.h"
#include "cli/spec_options.h"
#include "core/error.h"
#include "engine/engine.h"
#include "engine/token_decoder.h"
#include "model/model_config.h"
#include "server/engine_service.h"
#include "server/http/http_server.h"
#include "server/openai_server.h"
#include "server/tir_session.h"
#include "tir/sandbox_client.h"
#include "tir/tool_executor.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace qed::cli {
namespace {

struct ServeOptions {
  std::string model;
  std::string config_path;     // random weights of this HF config.json instead of a checkpoint
  std::string tokenizer_dir;   // tokenizer.json (+ tokenizer_config.json); default: the model directory
  std::string dtype = "bf16";  // of the random weights: bf16 | fp8 | int8_wo
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string served_model_name;
  std::string api_key;
  int max_queue = 512;
  int threads = 0;
  BackendFlags backend;
  int io_threads = 2;
  int max_model_len = 0;
  size_t kv_cache_mb = 256;
  int max_num_seqs = 64;
  int max_num_batched_tokens = 512;
  std::optional<uint64_t> seed;
  std::string sandbox;  // URL of `qed sandbox` for server-side TIR; empty = TIR requests are refused
  int tool_threads = 4;
  bool no_prefix_caching = false;
  double time_bank_s = 0;
  double time_bank_max_extra_s = 0;
  SpecOptions spec;
};

// The model's id and `root` in /v1/models: a checkpoint is known by its path; random weights of
// bench/configs/<name>/config.json by <name> ("qwen2.5-14b-shape"), as bench results name shapes.
std::string default_model_name(const ServeOptions& opt) {
  if (opt.config_path.empty()) return std::filesystem::path(opt.model).lexically_normal().string();
  const std::filesystem::path parent = std::filesystem::absolute(opt.config_path).lexically_normal().parent_path();
  return parent.filename().string();
}

std::unique_ptr<Backend> serve_backend(const ServeOptions& opt, const ModelConfig& config,
                                       const BackendSelection& selection) {
  if (opt.config_path.empty()) return make_backend(opt.model, selection);
  spdlog::info("serve: random {} weights of the shape in {} (no checkpoint: outputs are noise)", opt.dtype,
               opt.config_path);
  return make_random_backend(config, /*seed=*/0, selection);
}

void run_serve(ServeOptions opt) {
  if (!opt.model.empty() && !opt.config_path.empty())
    fail("qed serve: give one of --model (a checkpoint) or --config (random weights of its shape), not both");
  if (!opt.config_path.empty()) {
    if (opt.tokenizer_dir.empty())
      fail(
          "qed serve --config: also give --tokenizer DIR (tokenizer.json, tokenizer_config.json): random weights "
          "come without one");
    if (!std::filesystem::is_regular_file(opt.config_path)) fail("--config {}: no such file", opt.config_path);
    if (opt.spec.method == "redrafter")
      fail("--spec redrafter needs --model: its drafter reads the checkpoint's token embeddings");
  } else if (opt.dtype != "bf16") {
    fail("--dtype applies to --config (random weights); a checkpoint's dtype is in its config.json");
  }
  if (opt.model.empty() && opt.config_path.empty()) {
    opt.model = find_demo_model_dir();
    if (opt.served_model_name.empty()) opt.served_model_name = "demo";
    spdlog::info("serve: no --model given; serving the demo model at {}", opt.model);
  }
  if (opt.tokenizer_dir.empty()) opt.tokenizer_dir = opt.model;
  if (opt.time_bank_s < 0 || opt.time_bank_max_extra_s < 0)
    fail("--time-bank-s and --time-bank-max-extra-s must be >= 0");
  if (opt.port < 0 || opt.port > 65535) fail("--port {} is not a TCP port", opt.port);
  if (opt.max_queue < 1) fail("--max-queue must be >= 1, got {}", opt.max_queue);
  if (!std::filesystem::exists(opt.tokenizer_dir + "/tokenizer.json")) {
    fail("{}: no tokenizer.json (qed serve needs the model's tokenizer)", opt.tokenizer_dir);
  }
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up mid-write must not kill the server
  const Tokenizer tokenizer = Tokenizer::from_dir(opt.tokenizer_dir);
  std::optional<ChatTemplate> chat_template;
  try {
    chat_template.emplace(ChatTemplate::from_dir(opt.tokenizer_dir));
  } catch (const Error& e) {
    spdlog::warn("serve: no usable chat template ({}); /v1/chat/completions will answer 400", e.what());
  }

  // Every id the tokenizer can produce (prompts, the chat template's special tokens) needs an embedding row; checked
  // before the weights load, which takes a while for large shapes.
  const std::string config_file = opt.config_path.empty() ? opt.model + "/config.json" : opt.config_path;
  const ModelConfig model_config = ModelConfig::from_file(config_file);
  if (tokenizer.vocab_size() > size_t(model_config.vocab_size)) {
    fail("{}: the tokenizer has ids up to {}, beyond vocab_size {} of {}", opt.tokenizer_dir,
         tokenizer.vocab_size() - 1, model_config.vocab_size, config_file);
  }

  BackendSelection selection = backend_selection(opt.backend);
  selection.threads = opt.threads;
  selection.kv_cache_bytes = opt.kv_cache_mb << 20;
  selection.max_batched_tokens = std::max(opt.max_num_batched_tokens, opt.max_num_seqs);
  selection.random_dtype = opt.dtype;
  auto backend = serve_backend(opt, model_config, selection);
  EngineConfig engine_config;
  engine_config.max_model_len = opt.max_model_len;
  engine_config.enable_prefix_caching = !opt.no_prefix_caching;
  engine_config.scheduler.max_num_seqs = opt.max_num_seqs;
  engine_config.scheduler.max_num_batched_tokens = opt.max_num_batched_tokens;
  engine_config.seed = opt.seed ? *opt.seed : std::random_device{}();
  engine_config.drafter = make_drafter(opt.spec, opt.model);
  Engine engine(*backend, engine_config, tokenizer_decoder_factory(tokenizer));
  auto engine_service = std::make_unique<server::EngineService>(engine);
  // Sandbox calls run here, never on the HTTP or engine threads; reset before the engine service it resumes.
  std::unique_ptr<tir::ToolExecutor> tool_executor;
  server::TirContext tir_context;
  if (!opt.sandbox.empty()) {
    tir_context.sandbox = tir::parse_sandbox_url(opt.sandbox);
    if (!tir::SandboxClient(*tir_context.sandbox).healthy()) {
      spdlog::warn("serve: sandbox {} does not answer /health yet; TIR requests fail until it does", opt.sandbox);
    }
    tool_executor = std::make_unique<tir::ToolExecutor>(std::max(1, opt.tool_threads));
    tir_context.executor = tool_executor.get();
  }

  server::ServeConfig config;
  config.model_dir = opt.config_path.empty() ? opt.model : opt.config_path;
  config.served_model_name = opt.served_model_name.empty() ? default_model_name(opt) : opt.served_model_name;
  config.api_key = opt.api_key;
  config.max_queue = opt.max_queue;
  config.tir = tir_context;
  config.time_bank.per_question_s = opt.time_bank_s;
  config.time_bank.max_extra_s = opt.time_bank_max_extra_s;
  server::OpenAiServer api(config, tokenizer, chat_template ? &*chat_template : nullptr, *engine_service,
                           engine.max_model_len());

  http::ServerConfig http_config;
  http_config.host = opt.host;
  http_config.port = static_cast<uint16_t>(opt.port);
  http_config.io_threads = opt.io_threads;
  http_config.server_name = "qed-serve";
  auto server = std::make_unique<http::HttpServer>(http_config, api.router());

  // SIGINT/SIGTERM: stop accepting, end running generations (finish reason "abort"), drain, exit 0.
  boost::asio::io_context signals_io;
  boost::asio::signal_set signals(signals_io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("serve: signal {}, shutting down", sig);
    server->stop();
    engine_service->abort_all();
  });
  std::thread signal_thread([&] { signals_io.run(); });
  spdlog::info("serve: {} ({} KV blocks, max_model_len {}) on http://{}:{}", config.served_model_name,
               engine.block_manager().num_blocks(), engine.max_model_len(), opt.host, server->port());
  server->run();
  signals_io.stop();
  signal_thread.join();
  tool_executor.reset();   // finishes calls in flight (their resumes are ignored: everything was aborted)
  engine_service.reset();  // aborts anything left; callbacks may still touch streams the server owns
  server.reset();
  spdlog::info("serve: stopped");
}

}  // namespace

void register_serve(CLI::App& app) {
  auto opt = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (completions, chat, streaming) on the engine");
  cmd->add_option(
      "--model", opt->model,
      "Model directory (config.json, *.safetensors, tokenizer.json); default: the demo model (models/demo)");
  cmd->add_option("--config", opt->config_path,
                  "HF config.json: serve random weights of that shape (needs --tokenizer; latency benchmarks)");
  cmd->add_option("--tokenizer", opt->tokenizer_dir,
                  "Directory with tokenizer.json (+ tokenizer_config.json for the chat template); default: --model");
  cmd->add_option("--dtype", opt->dtype, "With --config: random weights in bf16, fp8 (W8A8) or int8_wo (cuda)")
      ->check(CLI::IsMember({"bf16", "fp8", "int8_wo"}))
      ->capture_default_str();
  cmd->add_option("--host", opt->host, "Address to bind")->capture_default_str();
  cmd->add_option("--port", opt->port, "TCP port (0 = any free port)")->capture_default_str();
  cmd->add_option("--served-model-name", opt->served_model_name,
                  "Model id clients use (default: --model, or --config's folder name)");
  cmd->add_option("--api-key", opt->api_key, "Require 'Authorization: Bearer KEY' on /v1/* and /tokenize");
  cmd->add_option("--max-queue", opt->max_queue, "Requests in flight at most; more get 503")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU threads for the model (0 = all)")->capture_default_str();
  cmd->add_option("--io-threads", opt->io_threads, "HTTP I/O threads")->capture_default_str();
  cmd->add_option("--max-model-len", opt->max_model_len, "Context length (0 = the model's)")->capture_default_str();
  cmd->add_option("--kv-cache-mb", opt->kv_cache_mb, "KV cache size in MiB")->capture_default_str();
  cmd->add_option("--max-num-seqs", opt->max_num_seqs, "Sequences per engine step")->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", opt->max_num_batched_tokens, "Tokens per engine step")
      ->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Seeds requests that bring no seed (default: random)");
  cmd->add_option("--sandbox", opt->sandbox,
                  "URL of a code sandbox (qed sandbox) for server-side tool calls, e.g. http://127.0.0.1:6000");
  add_spec_options(*cmd, opt->spec);
  cmd->add_flag("--no-enable-prefix-caching", opt->no_prefix_caching, "Recompute every prompt (vLLM's flag)");
  cmd->add_option("--tool-threads", opt->tool_threads, "Threads for concurrent sandbox calls")->capture_default_str();
  cmd->add_option("--time-bank-s", opt->time_bank_s,
                  "Early stop: seconds per question (a request group, qed.group); unused time is banked (0 = off)")
      ->capture_default_str();
  cmd->add_option("--time-bank-max-extra-s", opt->time_bank_max_extra_s,
                  "Early stop: most seconds one question may draw from the bank")
      ->capture_default_str();
  add_backend_flags(cmd, opt->backend);
  cmd->callback([opt] { run_serve(*opt); });
}

}  // namespace qed::cli
