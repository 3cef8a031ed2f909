#pragma once
// The load generator of `qed bench serve`: sends prepared streaming requests at a fixed concurrency (and
// optionally a Poisson request rate, as vLLM's benchmark_serving --request-rate), and summarises what the client
// measured with benchmark_serving's metric names (TTFT, TPOT, ITL, E2EL in ms; throughputs) so runs compare.
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qed::bench {

struct LoadConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;
  std::string api_key;
  int concurrency = 8;  // requests in flight at most (benchmark_serving --max-concurrency)
  double request_rate = std::numeric_limits<double>::infinity();  // requests/s, Poisson arrivals; inf = all at once
  uint64_t seed = 0;                                              // arrival times
  double timeout_s = 600;                                         // per connect/read step
};

struct LoadRequest {
  std::string target;   // "/v1/completions" or "/v1/chat/completions"
  nlohmann::json body;  // streamed; stream_options.include_usage is forced on so output tokens are the server's count
};

struct RequestRecord {
  bool ok = false;
  std::string error;
  double ttft_s = 0;                        // sent → first event with text
  double e2e_s = 0;                         // sent → [DONE]
  std::vector<double> itl_s;                // between successive events with text
  int prompt_tokens = 0;                    // usage
  int output_tokens = 0;                    // usage.completion_tokens
  std::string text;                         // all choices' text, concatenated in arrival order
  std::vector<std::string> finish_reasons;  // per choice
  std::vector<std::string> cuts;            // per choice: qed.cut or ""
  nlohmann::json qed = nullptr;             // the response's early-stop summary, if any
};

struct LoadResult {
  std::vector<RequestRecord> records;  // in request order
  double duration_s = 0;               // first send → last response
};

LoadResult run_load(const LoadConfig& config, const std::vector<LoadRequest>& requests);

// benchmark_serving's summary: completed, failed, duration, total_input_tokens, total_output_tokens,
// request_throughput, output_throughput, total_token_throughput and mean/median/std/p90/p99 of ttft_ms, tpot_ms,
// itl_ms, e2el_ms over the successful requests.
nlohmann::json summarize(const LoadResult& result);

// p-th percentile (0..100) by linear interpolation between order statistics (numpy's default, which
// benchmark_serving uses); 0 for an empty sample.
double percentile(std::vector<double> values, double p);

}  // namespace qed::bench
