// qed sandbox: the jailed Python execution service (NeMo-Skills wire protocol) on its own port.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <memory>
#include <thread>

#include "cli/commands.h"
#include "core/error.h"
#include "sandbox/sandbox_config.h"
#include "sandbox/sandbox_service.h"
#include "server/http/http_server.h"

namespace qed::cli {

namespace {

void parse_preimport(const std::string& text, std::vector<std::string>& out) {
  out.clear();
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string name = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!name.empty()) out.push_back(name);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
}

void run_sandbox(sandbox::SandboxConfig config, const std::string& preimport) {
  parse_preimport(preimport, config.jail.preimport);
  // A worker that dies mid-write must not take the service down with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  auto service = std::make_unique<sandbox::SandboxService>(config);
  http::ServerConfig server_config;
  server_config.host = config.host;
  server_config.port = config.port;
  server_config.io_threads = config.io_threads;
  server_config.max_body_bytes = config.max_body_bytes;
  server_config.server_name = "qed-sandbox";
  auto server = std::make_unique<http::HttpServer>(server_config, service->router());

  // SIGINT/SIGTERM → graceful stop: no new connections, in-flight calls answered, then exit 0.
  boost::asio::io_context signals_io;
  boost::asio::signal_set signals(signals_io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("sandbox: signal {}, shutting down", sig);
    server->stop();
  });
  std::thread signal_thread([&] { signals_io.run(); });

  spdlog::info("sandbox: listening on http://{}:{} ({} warm workers, jail: {})", config.host, server->port(),
               config.warm_workers, config.jail.insecure_no_jail ? "NONE (insecure)" : "bubblewrap+seccomp");
  server->run();
  signals_io.stop();
  signal_thread.join();
  service.reset();  // before the server: in-flight calls still answer through its connections
  server.reset();
  spdlog::info("sandbox: stopped");
}

}  // namespace

void register_sandbox(CLI::App& app) {
  auto config = std::make_shared<sandbox::SandboxConfig>();
  auto preimport = std::make_shared<std::string>("sympy,numpy");
  auto* cmd = app.add_subcommand("sandbox", "Secure Python execution service (NeMo-Skills sandbox protocol)");
  cmd->add_option("--host", config->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", config->port, "TCP port (0: pick a free one)")->capture_default_str();
  cmd->add_option("--workers", config->warm_workers, "Warm interpreters kept ready")->capture_default_str();
  cmd->add_option("--memory-mb", config->jail.limits.memory_mb, "Address-space limit per interpreter (MiB)")
      ->capture_default_str();
  cmd->add_option("--timeout-s", config->default_timeout_s, "Timeout when a request gives none (s)")
      ->capture_default_str();
  cmd->add_option("--max-timeout-s", config->max_timeout_s, "Upper bound on a request's timeout (s)")
      ->capture_default_str();
  cmd->add_option("--max-output-chars", config->default_max_output_chars,
                  "Output cut when a request gives no max_output_characters")
      ->capture_default_str();
  cmd->add_option("--max-sessions", config->max_sessions, "Live ipython sessions at most")->capture_default_str();
  cmd->add_option("--session-idle-s", config->session_idle_s, "Close sessions idle this long (0: never)")
      ->capture_default_str();
  cmd->add_option("--cpu-s", config->jail.limits.cpu_seconds, "CPU seconds per interpreter lifetime")
      ->capture_default_str();
  cmd->add_option("--max-processes", config->jail.limits.max_processes, "Processes+threads per session")
      ->capture_default_str();
  cmd->add_option("--max-file-mb", config->jail.limits.max_file_mb, "Largest file a session may write (MiB)")
      ->capture_default_str();
  cmd->add_option("--tmpfs-mb", config->jail.limits.tmpfs_mb, "Size of the private /tmp and home (MiB)")
      ->capture_default_str();
  cmd->add_option("--preimport", *preimport, "Modules imported before a worker is ready (comma list)")
      ->capture_default_str();
  cmd->add_option("--python", config->jail.python, "Interpreter run inside the jail")->capture_default_str();
  cmd->add_option("--io-threads", config->io_threads, "HTTP I/O threads")->capture_default_str();
  cmd->add_flag("--insecure-no-jail", config->jail.insecure_no_jail,
                "DEVELOPMENT ONLY: run code without namespaces or seccomp");
  cmd->callback([config, preimport] {
    if (config->warm_workers > 256) fail("--workers {}: at most 256", config->warm_workers);
    if (config->jail.limits.memory_mb < 64) fail("--memory-mb {}: at least 64", config->jail.limits.memory_mb);
    if (config->max_sessions == 0) fail("--max-sessions must be positive");
    run_sandbox(*config, *preimport);
  });
}

}  // namespace qed::cli
