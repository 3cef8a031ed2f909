#include "bench/offline/offline_workloads.h"

#include <algorithm>
#include <charconv>
#include <random>

#include "core/error.h"

namespace qed::bench {
namespace {

int parse_count(const std::string& text, const std::string& workload) {
  std::string digits = text;
  int multiplier = 1;
  if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) {
    multiplier = 1024;
    digits.pop_back();
  }
  int value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() || value <= 0 ||
      value > (1 << 30) / multiplier) {
    fail("bench offline: workload '{}': '{}' is not a positive count", workload, text);
  }
  return value * multiplier;
}

std::vector<int32_t> random_prompt(std::mt19937_64& rng, int length, int vocab_size) {
  std::uniform_int_distribution<int32_t> token(0, vocab_size - 1);
  std::vector<int32_t> prompt(static_cast<size_t>(length));
  for (int32_t& id : prompt) id = token(rng);
  return prompt;
}

// Results in the order the requests were added (ids grow with it), whatever order they finished in.
std::vector<RequestResult> run_to_completion(Engine& engine) {
  while (engine.has_unfinished()) engine.step();
  std::vector<RequestResult> results = engine.take_finished();
  for (const RequestResult& r : results) {
    if (!r.error.empty()) fail("bench offline: a request failed: {}", r.error);
  }
  std::sort(results.begin(), results.end(), [](const RequestResult& a, const RequestResult& b) { return a.id < b.id; });
  return results;
}

void record_sequences(const std::vector<RequestResult>& results, std::vector<spec::RecordedSequence>& out) {
  for (const RequestResult& r : results) {
    for (const SequenceResult& s : r.sequences) {
      spec::RecordedSequence record;
      record.tokens = r.prompt_token_ids;
      record.tokens.insert(record.tokens.end(), s.token_ids.begin(), s.token_ids.end());
      record.prompt_tokens = r.prompt_token_ids.size();
      out.push_back(std::move(record));
    }
  }
}

SamplingParams exact_length(int tokens, float temperature, uint64_t seed) {
  SamplingParams params;
  params.max_tokens = tokens;
  params.ignore_eos = true;  // every sequence generates exactly `tokens`
  params.temperature = temperature;
  params.seed = seed;
  return params;
}

WorkloadRun run_decode(Engine& engine, int vocab_size, const OfflineWorkload& w, std::mt19937_64& rng) {
  for (int i = 0; i < w.batch; ++i) {
    engine.add_request(random_prompt(rng, w.prompt_tokens, vocab_size), exact_length(w.generate_tokens, 0.0f, 0));
  }
  const std::vector<RequestResult> results = run_to_completion(engine);
  // The window in which every sequence is decoding: after the last first token, before the first last token.
  double start = 0, end = 1e300;
  for (const RequestResult& r : results) {
    for (const SequenceResult& s : r.sequences) {
      if (s.token_times_s.size() < 2) fail("bench offline: {} needs at least 2 generated tokens", w.name);
      start = std::max(start, s.token_times_s.front());
      end = std::min(end, s.token_times_s.back());
    }
  }
  if (!(end > start)) fail("bench offline: {}: no window where all sequences decode (too few tokens?)", w.name);
  int64_t tokens = 0;
  for (const RequestResult& r : results) {
    for (const SequenceResult& s : r.sequences) {
      tokens += std::count_if(s.token_times_s.begin(), s.token_times_s.end(),
                              [&](double t) { return t > start && t <= end; });
    }
  }
  const double tok_per_s = double(tokens) / (end - start);
  WorkloadRun run{{{"tok_per_s", tok_per_s}, {"per_seq_tok_per_s", tok_per_s / w.batch}}, {}};
  record_sequences(results, run.sequences);
  return run;
}

WorkloadRun run_ttft(Engine& engine, int vocab_size, const OfflineWorkload& w, const OfflineSettings& s,
                     std::mt19937_64& rng) {
  std::vector<double> ttft_ms;
  WorkloadRun run;
  for (int i = 0; i < std::max(1, s.ttft_repeats); ++i) {
    engine.add_request(random_prompt(rng, w.prompt_tokens, vocab_size), exact_length(1, 0.0f, 0));
    const std::vector<RequestResult> results = run_to_completion(engine);
    ttft_ms.push_back(results.at(0).ttft_s * 1e3);
    record_sequences(results, run.sequences);
  }
  std::sort(ttft_ms.begin(), ttft_ms.end());
  run.metrics = {{"ttft_ms", ttft_ms[ttft_ms.size() / 2]}};
  return run;
}

WorkloadRun run_aimo(Engine& engine, int vocab_size, const OfflineWorkload& w, const OfflineSettings& s,
                     std::mt19937_64& rng) {
  SamplingParams params = exact_length(w.generate_tokens, s.aimo_temperature, s.seed);
  params.n = w.batch;  // one problem, S samples sharing its prompt blocks, all started together
  engine.add_request(random_prompt(rng, w.prompt_tokens, vocab_size), params);
  const std::vector<RequestResult> results = run_to_completion(engine);
  const RequestResult& result = results.at(0);
  double per_sample = 0;
  for (const SequenceResult& seq : result.sequences) {
    if (seq.token_ids.size() != size_t(w.generate_tokens) || seq.token_times_s.empty()) {
      fail("bench offline: {}: a sample generated {} tokens, expected {}", w.name, seq.token_ids.size(),
           w.generate_tokens);
    }
    per_sample += double(seq.token_ids.size()) / seq.token_times_s.back();
  }
  per_sample /= double(result.sequences.size());
  const double generated = double(w.batch) * w.generate_tokens;
  WorkloadRun run{{{"total_s", result.total_s},
                   {"batch_tok_per_s", generated / result.total_s},
                   {"per_sample_tok_per_s", per_sample}},
                  {}};
  record_sequences(results, run.sequences);
  return run;
}

}  // namespace

OfflineWorkload parse_workload(const std::string& name, const OfflineSettings& settings) {
  OfflineWorkload w;
  w.name = name;
  if (name.starts_with("decode_b")) {
    w.kind = OfflineWorkload::Kind::Decode;
    w.batch = parse_count(name.substr(8), name);
    w.prompt_tokens = settings.context;
    w.generate_tokens = settings.decode_tokens;
  } else if (name.starts_with("ttft_")) {
    w.kind = OfflineWorkload::Kind::Ttft;
    w.prompt_tokens = parse_count(name.substr(5), name);
    w.generate_tokens = 1;
  } else if (name.starts_with("aimo_") && name.find('x') != std::string::npos) {
    w.kind = OfflineWorkload::Kind::Aimo;
    const size_t x = name.find('x');
    w.batch = parse_count(name.substr(5, x - 5), name);
    w.generate_tokens = parse_count(name.substr(x + 1), name);
    w.prompt_tokens = settings.aimo_prompt_tokens;
  } else {
    fail("bench offline: unknown workload '{}' (decode_b<N>, ttft_<N>[k], aimo_<S>x<T>)", name);
  }
  if (w.kind == OfflineWorkload::Kind::Decode && w.generate_tokens < 2)
    fail("bench offline: {} needs --decode-tokens >= 2", name);
  return w;
}

WorkloadRun run_workload(Engine& engine, int vocab_size, const OfflineWorkload& workload,
                         const OfflineSettings& settings) {
  if (engine.has_unfinished()) fail("bench offline: the engine is busy");
  std::mt19937_64 rng(settings.seed ^ std::hash<std::string>{}(workload.name));
  switch (workload.kind) {
    case OfflineWorkload::Kind::Decode:
      return run_decode(engine, vocab_size, workload, rng);
    case OfflineWorkload::Kind::Ttft:
      return run_ttft(engine, vocab_size, workload, settings, rng);
    case OfflineWorkload::Kind::Aimo:
      return run_aimo(engine, vocab_size, workload, settings, rng);
  }
  fail("bench offline: unknown workload kind");
}

std::vector<Metric> median_metrics(const std::vector<std::vector<Metric>>& runs) {
  std::vector<std::string> names;
  std::vector<std::vector<double>> values;
  for (const std::vector<Metric>& run : runs) {
    for (const Metric& m : run) {
      const auto it = std::find(names.begin(), names.end(), m.metric);
      if (it == names.end()) {
        names.push_back(m.metric);
        values.push_back({m.value});
      } else {
        values[static_cast<size_t>(it - names.begin())].push_back(m.value);
      }
    }
  }
  std::vector<Metric> out;
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<double>& v = values[i];
    std::sort(v.begin(), v.end());
    const size_t mid = v.size() / 2;
    out.push_back({names[i], v.size() % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2});
  }
  return out;
}

}  // namespace qed::bench
