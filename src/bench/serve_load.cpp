#include "bench/serve_load.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

#include "bench/sse_client.h"

namespace qed::bench {

using nlohmann::json;

namespace {

double seconds(BenchClock::duration d) {
  return std::chrono::duration<double>(d).count();
}

RequestRecord to_record(const StreamedResponse& r) {
  RequestRecord rec;
  rec.ok = r.ok();
  rec.error = r.error;
  if (!r.content_times.empty()) {
    rec.ttft_s = seconds(r.content_times.front() - r.sent);
    for (size_t i = 1; i < r.content_times.size(); ++i) {
      rec.itl_s.push_back(seconds(r.content_times[i] - r.content_times[i - 1]));
    }
  }
  for (const json& e : r.events) {
    if (auto u = e.find("usage"); u != e.end() && u->is_object()) {
      rec.prompt_tokens = u->value("prompt_tokens", 0);
      rec.output_tokens = u->value("completion_tokens", 0);
    }
    if (auto q = e.find("qed"); q != e.end()) rec.qed = *q;
    const auto choices = e.find("choices");
    if (choices == e.end() || !choices->is_array()) continue;
    for (const json& c : *choices) {
      const size_t index = c.value("index", size_t{0});
      if (index >= 4096) continue;
      if (rec.finish_reasons.size() <= index) {
        rec.finish_reasons.resize(index + 1);
        rec.cuts.resize(index + 1);
      }
      if (auto t = c.find("text"); t != c.end() && t->is_string()) rec.text += t->get<std::string>();
      if (auto d = c.find("delta");
          d != c.end() && d->is_object() && d->contains("content") && (*d)["content"].is_string()) {
        rec.text += (*d)["content"].get<std::string>();
      }
      if (auto f = c.find("finish_reason"); f != c.end() && f->is_string()) rec.finish_reasons[index] = *f;
      if (auto q = c.find("qed"); q != c.end() && q->is_object() && q->contains("cut")) {
        rec.cuts[index] = (*q)["cut"].get<std::string>();
      }
    }
  }
  return rec;
}

json stats_ms(const std::vector<double>& seconds_values) {
  std::vector<double> ms(seconds_values.size());
  std::transform(seconds_values.begin(), seconds_values.end(), ms.begin(), [](double s) { return s * 1e3; });
  const double n = static_cast<double>(ms.size());
  const double mean = ms.empty() ? 0 : std::accumulate(ms.begin(), ms.end(), 0.0) / n;
  double var = 0;
  for (double x : ms) var += (x - mean) * (x - mean);
  const double stddev = ms.empty() ? 0 : std::sqrt(var / n);  // population std, as numpy's np.std
  return {{"mean", mean},
          {"median", percentile(ms, 50)},
          {"std", stddev},
          {"p90", percentile(ms, 90)},
          {"p99", percentile(ms, 99)}};
}

}  // namespace

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

LoadResult run_load(const LoadConfig& config, const std::vector<LoadRequest>& requests) {
  LoadResult result;
  result.records.resize(requests.size());
  // Arrival offsets: exponential gaps (a Poisson process), fixed by the seed; all zero at an infinite rate.
  std::vector<double> arrival(requests.size(), 0.0);
  if (std::isfinite(config.request_rate) && config.request_rate > 0) {
    std::mt19937_64 rng(config.seed);
    std::exponential_distribution<double> gap(config.request_rate);
    double t = 0;
    for (double& a : arrival) {
      a = t;
      t += gap(rng);
    }
  }
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(config.timeout_s * 1e3));
  std::atomic<size_t> next{0};
  const auto start = BenchClock::now();
  std::mutex end_mutex;
  auto last_end = start;
  const int workers = std::max(1, std::min<int>(config.concurrency, static_cast<int>(requests.size())));
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      for (size_t i = next++; i < requests.size(); i = next++) {
        std::this_thread::sleep_until(
            start + std::chrono::duration_cast<BenchClock::duration>(std::chrono::duration<double>(arrival[i])));
        json body = requests[i].body;
        body["stream"] = true;
        body["stream_options"] = {{"include_usage", true}};
        const StreamedResponse r =
            stream_post(config.host, config.port, requests[i].target, body, config.api_key, timeout);
        result.records[i] = to_record(r);
        result.records[i].e2e_s = seconds(BenchClock::now() - r.sent);
        std::lock_guard lock(end_mutex);
        last_end = std::max(last_end, BenchClock::now());
      }
    });
  }
  for (auto& t : threads) t.join();
  result.duration_s = seconds(last_end - start);
  return result;
}

json summarize(const LoadResult& result) {
  int completed = 0, failed = 0;
  int64_t input_tokens = 0, output_tokens = 0;
  std::vector<double> ttft, tpot, itl, e2el;
  std::vector<std::string> errors;
  for (const RequestRecord& r : result.records) {
    if (!r.ok) {
      ++failed;
      if (errors.size() < 5) errors.push_back(r.error);
      continue;
    }
    ++completed;
    input_tokens += r.prompt_tokens;
    output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s);
    e2el.push_back(r.e2e_s);
    if (r.output_tokens > 1) tpot.push_back((r.e2e_s - r.ttft_s) / (r.output_tokens - 1));
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
  }
  const double d = result.duration_s > 0 ? result.duration_s : 1e-9;
  return {{"completed", completed},
          {"failed", failed},
          {"errors", errors},
          {"duration_s", result.duration_s},
          {"total_input_tokens", input_tokens},
          {"total_output_tokens", output_tokens},
          {"request_throughput", completed / d},
          {"output_throughput", static_cast<double>(output_tokens) / d},
          {"total_token_throughput", static_cast<double>(input_tokens + output_tokens) / d},
          {"ttft_ms", stats_ms(ttft)},
          {"tpot_ms", stats_ms(tpot)},
          {"itl_ms", stats_ms(itl)},
          {"e2el_ms", stats_ms(e2el)}};
}

}  // namespace qed::bench
