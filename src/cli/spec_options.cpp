#include "cli/spec_options.h"

#include "core/error.h"
#include "spec/ngram_drafter.h"

namespace qed {

void add_spec_options(CLI::App& cmd, SpecOptions& options) {
  cmd.add_option("--spec", options.method, "Speculative decoding: none | ngram (prompt lookup; outputs unchanged)")
      ->check(CLI::IsMember({"none", "ngram"}))
      ->capture_default_str();
  cmd.add_option("--num-draft-tokens", options.num_draft_tokens, "Draft tokens proposed per step (K)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd.add_option("--spec-max-ngram", options.max_ngram, "Longest suffix the n-gram drafter matches")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
}

std::shared_ptr<const spec::Drafter> make_drafter(const SpecOptions& options) {
  if (options.method == "none") return nullptr;
  if (options.method == "ngram") {
    return std::make_shared<spec::NgramDrafter>(spec::NgramDrafterConfig{
        .num_draft_tokens = options.num_draft_tokens, .max_ngram = options.max_ngram, .min_ngram = 1});
  }
  fail("--spec: unknown method '{}' (none, ngram)", options.method);
}

nlohmann::json spec_stats_json(const SpecOptions& options, const EngineStats& stats) {
  const double steps = static_cast<double>(stats.spec_verify_steps);
  const double drafts = static_cast<double>(stats.spec_draft_tokens);
  const double accepted = static_cast<double>(stats.spec_accepted_tokens);
  return {{"spec", options.method},
          {"num_draft_tokens", options.num_draft_tokens},
          {"verify_steps", stats.spec_verify_steps},
          {"draft_tokens", stats.spec_draft_tokens},
          {"accepted_tokens", stats.spec_accepted_tokens},
          {"acceptance_rate", drafts > 0 ? accepted / drafts : 0.0},
          {"mean_accepted_length", steps > 0 ? 1.0 + accepted / steps : 1.0}};
}

}  // namespace qed
