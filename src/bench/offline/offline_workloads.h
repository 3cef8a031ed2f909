#pragma once
// The offline benchmark workloads, run on an Engine over any Backend: decode throughput at a batch size, prefill
// time-to-first-token for a prompt length, and the AIMO shape (S concurrent samples of one prompt, T tokens each,
// EOS ignored, all started together). Prompts are random token ids from a seed; each result is a list of
// (metric, value) pairs named as shared/design.md "Formats" expects.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "spec/oracle_drafter.h"

namespace qed::bench {

struct OfflineWorkload {
  enum class Kind { Decode, Ttft, Aimo } kind = Kind::Decode;
  std::string name;         // as given: decode_b8, ttft_1k, aimo_12x4500
  int batch = 1;            // decode: concurrent sequences; aimo: samples
  int prompt_tokens = 0;    // ttft: the prompt; aimo: 200; decode: OfflineSettings::context
  int generate_tokens = 0;  // decode: OfflineSettings::decode_tokens; aimo: T; ttft: 1
};

struct OfflineSettings {
  int context = 1024;       // prompt tokens of each decode_b* sequence
  int decode_tokens = 256;  // tokens each decode_b* sequence generates
  int aimo_prompt_tokens = 200;
  float aimo_temperature = 0.7f;
  int ttft_repeats = 3;  // median of
  uint64_t seed = 0;
};

// "decode_b<N>", "ttft_<N>" or "ttft_<N>k" (×1024), "aimo_<S>x<T>"; throws qed::Error naming the bad one.
OfflineWorkload parse_workload(const std::string& name, const OfflineSettings& settings);

struct Metric {
  std::string metric;
  double value = 0;
};

struct WorkloadRun {
  std::vector<Metric> metrics;
  // Every sequence's prompt + generated tokens, in the order the workload adds them: a run without drafts is the
  // record an oracle drafter replays, and a speculative run is compared with it token for token.
  std::vector<spec::RecordedSequence> sequences;
};

// Runs one workload to completion on `engine` (which must be idle) and returns its metrics:
//   decode: tok_per_s (all sequences' tokens per second while every sequence is decoding), per_seq_tok_per_s
//   ttft:   ttft_ms (median over repeats, each on a fresh random prompt)
//   aimo:   total_s, batch_tok_per_s, per_sample_tok_per_s
// The prompts depend on the workload's name and settings.seed only, so runs on two engines see the same ones.
WorkloadRun run_workload(Engine& engine, int vocab_size, const OfflineWorkload& workload,
                         const OfflineSettings& settings);

// Each metric's median over repeated runs (the mean of the middle two for an even count), in first-seen order; a
// metric missing from some runs takes the median of those that have it.
std::vector<Metric> median_metrics(const std::vector<std::vector<Metric>>& runs);

}  // namespace qed::bench
