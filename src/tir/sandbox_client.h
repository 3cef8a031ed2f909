#pragma once
// Client of the code-execution sandbox (`qed sandbox`, or NeMo-Skills' own: same protocol, facts §1.1–1.2):
// POST /execute with an ipython session per sample (X-Session-ID), DELETE /sessions/{id} at the end.
// One blocking HTTP connection per client: one client per thread.
#include <cstdint>
#include <memory>
#include <string>

#include "server/http/http_client.h"

namespace qed::tir {

struct ExecutionResult {
  std::string process_status;  // "completed" | "error" | "timeout"
  std::string stdout_text;
  std::string stderr_text;
};

struct SandboxAddress {
  std::string host;
  uint16_t port = 0;
  std::string url;  // as given, for messages
};
// "http://host:port" (a trailing slash is fine). Throws qed::Error on anything else.
SandboxAddress parse_sandbox_url(const std::string& url);

class SandboxClient {
 public:
  explicit SandboxClient(SandboxAddress address);

  // Runs `code` in session `session_id` (created on first use) with the sandbox's own timeout and output cut
  // (`max_output_characters`, applied to stdout and stderr separately, as NS's server does). As NS's client:
  // no answer within timeout + 5 s, or HTTP 502, is a "timeout" result with stderr "Client timed out\n".
  // Throws qed::Error naming the URL when the sandbox cannot be reached or answers with an error.
  ExecutionResult execute(const std::string& code, const std::string& session_id, double timeout_s,
                          int max_output_characters);
  // Best effort (a 404 counts as done); never throws.
  void delete_session(const std::string& session_id) noexcept;
  // GET /health answered 200.
  bool healthy() noexcept;

 private:
  SandboxAddress address_;
  std::unique_ptr<http::HttpClient> http_;
};

// A fresh random session id ("qed-" + 32 hex digits).
std::string new_session_id();

}  // namespace qed::tir
