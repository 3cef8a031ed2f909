#pragma once
// The speculative-decoding flags shared by qed generate, batch and serve (--spec, --num-draft-tokens), mapped 1:1
// onto the drafter the engine gets, and the acceptance numbers they report.
#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "spec/drafter.h"

namespace qed {

struct SpecOptions {
  std::string method = "none";  // none | ngram | redrafter
  int num_draft_tokens = 4;     // ngram: K; redrafter: draft length per beam
  int max_ngram = 4;
  std::string drafter_dir;  // redrafter: RD checkpoint (config.json + model.safetensors)
  int num_beams = 4;        // redrafter
};

void add_spec_options(CLI::App& cmd, SpecOptions& options);
// Null for "none". The ReDrafter head reads the base model's (model_dir's) token embedding table.
std::shared_ptr<const spec::Drafter> make_drafter(const SpecOptions& options, const std::string& model_dir);
// {"spec", "verify_steps", "draft_tokens", "accepted_tokens", "acceptance_rate", "mean_accepted_length"}: the
// mean accepted length counts the base model's own token, so 1.0 = nothing accepted.
nlohmann::json spec_stats_json(const SpecOptions& options, const EngineStats& stats);

// One entry of qed bench offline's --spec list.
struct BenchSpec {
  std::string label;        // the rows' "spec": "oracle-p0.6" (as written), "ngram", "redrafter"
  double oracle_p = -1;     // oracle-p<P>: P (its drafter is made per workload, from the run without drafts)
  double synthetic_p = -1;  // synthetic-p<P>: P (acceptance by a seeded coin; bench only, outputs are not the model's)
  SpecOptions options;      // ngram / redrafter: what make_drafter builds
};
// "none|oracle-p<P>|synthetic-p<P>|ngram|redrafter:<dir>" comma list → the speculative configurations ("none" adds
// nothing: the run without drafts always happens, as every speedup's baseline). draft_len and beams apply to each;
// throws qed::Error with one line on an unknown entry, a bad p, or beams > 1 with no redrafter to use them.
std::vector<BenchSpec> parse_bench_specs(const std::string& list, int draft_len, int beams);

}  // namespace qed
