// qed serve: the OpenAI-compatible HTTP server (src/server/openai_server.h) over the engine on the CPU reference
// backend. Flags follow vLLM's `vllm serve` names where they exist.
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

void run_serve(ServeOptions opt) {
  if (opt.model.empty()) {
    opt.model = find_demo_model_dir();
    if (opt.served_model_name.empty()) opt.served_model_name = "demo";
    spdlog::info("serve: no --model given; serving the demo model at {}", opt.model);
  }
  if (opt.time_bank_s < 0 || opt.time_bank_max_extra_s < 0)
    fail("--time-bank-s and --time-bank-max-extra-s must be >= 0");
  if (opt.port < 0 || opt.port > 65535) fail("--port {} is not a TCP port", opt.port);
  if (opt.max_queue < 1) fail("--max-queue must be >= 1, got {}", opt.max_queue);
  if (!std::filesystem::exists(opt.model + "/tokenizer.json")) {
    fail("{}: no tokenizer.json (qed serve needs the model's tokenizer)", opt.model);
  }
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up mid-write must not kill the server
  const Tokenizer tokenizer = Tokenizer::from_dir(opt.model);
  std::optional<ChatTemplate> chat_template;
  try {
    chat_template.emplace(ChatTemplate::from_dir(opt.model));
  } catch (const Error& e) {
    spdlog::warn("serve: no usable chat template ({}); /v1/chat/completions will answer 400", e.what());
  }

  BackendSelection selection = backend_selection(opt.backend);
  selection.threads = opt.threads;
  selection.kv_cache_bytes = opt.kv_cache_mb << 20;
  selection.max_batched_tokens = std::max(opt.max_num_batched_tokens, opt.max_num_seqs);
  auto backend = make_backend(opt.model, selection);
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
  config.model_dir = opt.model;
  config.served_model_name = opt.served_model_name.empty()
                                 ? std::filesystem::path(opt.model).lexically_normal().string()
                                 : opt.served_model_name;
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
  cmd->add_option("--host", opt->host, "Address to bind")->capture_default_str();
  cmd->add_option("--port", opt->port, "TCP port (0 = any free port)")->capture_default_str();
  cmd->add_option("--served-model-name", opt->served_model_name, "Model id clients use (default: --model)");
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
