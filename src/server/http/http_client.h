#pragma once
// Blocking HTTP/1.1 client with one keep-alive connection, for callers that talk to a local service in a loop
// (the TIR loop calling the sandbox, tests, benchmarks). Not thread-safe: one client per thread.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "server/http/http_message.h"

namespace qed::http {

struct ClientResponse {
  int status = 0;
  Headers headers;
  std::string body;
  nlohmann::json json() const;  // throws qed::Error when the body is not JSON
};

class HttpClient {
 public:
  HttpClient(std::string host, uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(60));
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Throws qed::Error naming host:port and target on connect/read/write failure or timeout. A request on a
  // reused connection that the server closed meanwhile is retried once on a fresh connection.
  ClientResponse request(const std::string& method, const std::string& target, const std::string& body = "",
                         const Headers& headers = {});
  ClientResponse post_json(const std::string& target, const nlohmann::json& body, const Headers& headers = {});
  ClientResponse get(const std::string& target) { return request("GET", target); }

  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string host_;
  uint16_t port_;
  std::chrono::milliseconds timeout_;
};

}  // namespace qed::http
