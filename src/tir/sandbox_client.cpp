#include "tir/sandbox_client.h"

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"

namespace qed::tir {

SandboxAddress parse_sandbox_url(const std::string& url) {
  std::string_view rest = url;
  if (!rest.starts_with("http://")) fail("sandbox URL '{}' must start with http://", url);
  rest.remove_prefix(7);
  if (rest.ends_with('/')) rest.remove_suffix(1);
  const size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || rest.find('/') != std::string_view::npos) {
    fail("sandbox URL '{}' must be http://HOST:PORT", url);
  }
  const std::string_view port_text = rest.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535) {
    fail("sandbox URL '{}' has no valid port", url);
  }
  return {std::string(rest.substr(0, colon)), static_cast<uint16_t>(port), url};
}

SandboxClient::SandboxClient(SandboxAddress address) : address_(std::move(address)) {
  http_ = std::make_unique<http::HttpClient>(address_.host, address_.port);
}

ExecutionResult SandboxClient::execute(const std::string& code, const std::string& session_id, double timeout_s,
                                       int max_output_characters) {
  const nlohmann::json body = {{"generated_code", code},
                               {"timeout", timeout_s},
                               {"language", "ipython"},
                               {"max_output_characters", max_output_characters},
                               {"traceback_verbosity", "Plain"}};
  http_->set_timeout(std::chrono::milliseconds(static_cast<int64_t>((timeout_s + 5.0) * 1000)));
  http::ClientResponse response;
  try {
    response = http_->post_json("/execute", body, {{"X-Session-ID", session_id}});
  } catch (const Error& e) {
    // The HTTP client reports its deadline as a timeout; anything else means the sandbox is not there.
    if (std::string_view(e.what()).find("timeout") != std::string_view::npos) {
      return {"timeout", "", "Client timed out\n"};
    }
    fail("sandbox {} unreachable: {}", address_.url, e.what());
  }
  if (response.status == 502) return {"timeout", "", "Client timed out\n"};
  if (response.status != 200) {
    fail("sandbox {} answered HTTP {}: {}", address_.url, response.status, response.body.substr(0, 300));
  }
  nlohmann::json out;
  try {
    out = nlohmann::json::parse(response.body);
  } catch (const nlohmann::json::exception& e) {
    fail("sandbox {} answered with invalid JSON: {}", address_.url, e.what());
  }
  auto text = [&out](const char* key) {
    auto it = out.find(key);
    return it != out.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  return {text("process_status"), text("stdout"), text("stderr")};
}

void SandboxClient::delete_session(const std::string& session_id) noexcept {
  try {
    http_->set_timeout(std::chrono::seconds(10));
    http_->request("DELETE", "/sessions/" + session_id);
  } catch (...) {
    // The session expires on its own (or the sandbox is gone with it).
  }
}

bool SandboxClient::healthy() noexcept {
  try {
    http_->set_timeout(std::chrono::seconds(5));
    return http_->get("/health").status == 200;
  } catch (...) {
    return false;
  }
}

std::string new_session_id() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return fmt::format("qed-{:016x}{:016x}", rng(), rng());
}

}  // namespace qed::tir
