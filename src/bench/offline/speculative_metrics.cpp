#include "bench/offline/speculative_metrics.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace qed::bench {
namespace {

double metric_value(const std::vector<Metric>& metrics, const std::string& name) {
  for (const Metric& m : metrics) {
    if (m.metric == name) return m.value;
  }
  fail("bench offline: no '{}' metric to compare", name);
}

}  // namespace

const char* headline_metric(const OfflineWorkload& workload) {
  switch (workload.kind) {
    case OfflineWorkload::Kind::Decode:
      return "tok_per_s";
    case OfflineWorkload::Kind::Aimo:
      return "batch_tok_per_s";
    case OfflineWorkload::Kind::Ttft:
      break;
  }
  fail("bench offline: {} generates one token: nothing for a drafter to speed up", workload.name);
}

std::vector<Metric> speculative_metrics(const OfflineWorkload& workload, const WorkloadRun& baseline,
                                        const WorkloadRun& run, const EngineStats& stats) {
  const std::string headline = headline_metric(workload);
  const double steps = static_cast<double>(stats.spec_verify_steps);
  const double drafted = static_cast<double>(stats.spec_draft_tokens);
  const double accepted = static_cast<double>(stats.spec_accepted_tokens);
  const double mean_accepted = steps > 0 ? accepted / steps : 0.0;
  std::vector<Metric> out = {
      {"speedup_vs_none", metric_value(run.metrics, headline) / metric_value(baseline.metrics, headline)},
      {"verify_steps", steps},
      {"mean_accepted_tokens", mean_accepted},
      {"mean_accepted_length", 1.0 + mean_accepted},
      {"acceptance_rate", drafted > 0 ? accepted / drafted : 0.0},
  };
  for (size_t d = 0; d < stats.spec_tested_at_depth.size(); ++d) {
    const double tested = static_cast<double>(stats.spec_tested_at_depth[d]);
    if (tested > 0) {
      out.push_back(
          {fmt::format("acceptance_rate_pos{}", d + 1), static_cast<double>(stats.spec_accepted_at_depth[d]) / tested});
    }
  }
  const double generated = static_cast<double>(stats.generated_tokens);
  out.push_back({"verified_token_fraction", generated > 0 ? (steps + accepted) / generated : 0.0});
  if (run.sequences.size() != baseline.sequences.size())
    fail("bench offline: {}: {} sequences with drafts, {} without", workload.name, run.sequences.size(),
         baseline.sequences.size());
  int diverged = 0;
  for (size_t i = 0; i < run.sequences.size(); ++i) diverged += run.sequences[i].tokens != baseline.sequences[i].tokens;
  out.push_back({"diverged_sequences", static_cast<double>(diverged)});
  return out;
}

}  // namespace qed::bench
