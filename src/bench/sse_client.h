#pragma once
// One streamed OpenAI request as a benchmark sees it: POST a JSON body, read the SSE events as they arrive and
// stamp each with the time it was parsed, so time-to-first-token and inter-token latencies are measured at the
// client (as vLLM's benchmark_serving does), not taken from the server's own metrics.
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qed::bench {

using BenchClock = std::chrono::steady_clock;

struct StreamedResponse {
  int status = 0;
  std::string error;  // transport failure, non-200 status (with the body) or an error event; empty on success
  BenchClock::time_point sent;
  std::vector<BenchClock::time_point> content_times;  // events that carried generated text
  std::vector<nlohmann::json> events;                 // every `data:` payload but [DONE]
  bool done = false;                                  // saw `data: [DONE]`
  bool ok() const { return error.empty() && done; }
};

// Blocking; `timeout` bounds every connect/read/write step (not the whole stream).
StreamedResponse stream_post(const std::string& host, uint16_t port, const std::string& target,
                             const nlohmann::json& body, const std::string& api_key, std::chrono::milliseconds timeout);

}  // namespace qed::bench
