#pragma once
// HTTP/1.1 server on Boost.Beast: keep-alive, bounded header/body sizes, per-connection timeouts, handlers that
// may answer from any thread, and graceful shutdown (stop accepting, finish in-flight requests, then close).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "server/http/router.h"

namespace qed::http {

struct ServerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: pick a free port (see HttpServer::port())
  int io_threads = 2;
  size_t max_header_bytes = 64 * 1024;
  size_t max_body_bytes = 16 * 1024 * 1024;
  // Bounds both an idle keep-alive connection and a slow sender (no slowloris can pin a connection forever).
  std::chrono::seconds read_timeout{120};
  std::chrono::seconds write_timeout{60};
  // After stop(): how long in-flight handlers may still finish before connections are cut.
  std::chrono::seconds shutdown_grace{10};
  std::string server_name = "qed";
};

class HttpServer {
 public:
  // Binds and listens immediately; throws qed::Error naming host:port when that fails.
  HttpServer(ServerConfig config, Router router);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  uint16_t port() const;
  // Serves on config.io_threads threads (the caller's included) until stop() completes.
  void run();
  // Thread-safe and idempotent; callable from a signal handler thread. run() returns once connections drain.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qed::http
