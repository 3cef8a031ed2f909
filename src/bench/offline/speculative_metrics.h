#pragma once
// What a speculative run of a workload measured, next to the same workload run without drafts on the same backend
// in the same process (its baseline): the speedup of the workload's headline throughput and the acceptance the
// engine's verifier counted. Nothing here is derived from a drafter's settings (an oracle's p): only from what the
// engine accepted.
#include <vector>

#include "bench/offline/offline_workloads.h"
#include "engine/engine.h"

namespace qed::bench {

// decode_b*: tok_per_s; aimo_*: batch_tok_per_s; ttft_*: none (one token has nothing to verify), throws.
const char* headline_metric(const OfflineWorkload& workload);

// From `run` (metrics and sequences) against `baseline`, with `stats` of the engine that ran only `run`:
//   speedup_vs_none       the headline metric's ratio
//   verify_steps          sequence-steps that verified a draft
//   mean_accepted_tokens  draft tokens accepted per verify step (0 = none; the base model's own token not counted)
//   mean_accepted_length  1 + mean_accepted_tokens: tokens a verify step yields (the schema of the spec benches)
//   acceptance_rate       accepted / proposed draft tokens
//   acceptance_rate_pos<d> accepted / tested at draft depth d (a depth is tested when all above it were accepted)
//   verified_token_fraction  generated tokens that came out of verify steps (the rest decoded without a draft)
//   diverged_sequences    sequences whose tokens differ from the baseline's (lossless verification makes this 0
//                         up to floating-point ties between differently shaped forwards)
std::vector<Metric> speculative_metrics(const OfflineWorkload& workload, const WorkloadRun& baseline,
                                        const WorkloadRun& run, const EngineStats& stats);

}  // namespace qed::bench
