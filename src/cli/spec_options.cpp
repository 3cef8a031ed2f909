#include "cli/spec_options.h"

#include "core/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "spec/ngram_drafter.h"
#include "spec/oracle_drafter.h"
#include "spec/redrafter_drafter.h"
#include "spec/synthetic_acceptance.h"

namespace qed {

void add_spec_options(CLI::App& cmd, SpecOptions& options) {
  cmd.add_option("--spec", options.method,
                 "Speculative decoding: none | ngram (prompt lookup) | redrafter (--drafter); outputs unchanged")
      ->check(CLI::IsMember({"none", "ngram", "redrafter"}))
      ->capture_default_str();
  cmd.add_option("--num-draft-tokens", options.num_draft_tokens, "Draft tokens proposed per step (K)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd.add_option("--spec-max-ngram", options.max_ngram, "Longest suffix the n-gram drafter matches")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd.add_option("--drafter", options.drafter_dir, "ReDrafter head directory (RD config.json + model.safetensors)");
  cmd.add_option("--num-beams", options.num_beams, "ReDrafter beams per step")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
}

std::shared_ptr<const spec::Drafter> make_drafter(const SpecOptions& options, const std::string& model_dir) {
  if (options.method == "none") return nullptr;
  if (options.method == "redrafter") {
    if (options.drafter_dir.empty()) fail("--spec redrafter needs --drafter DIR (a ReDrafter head)");
    spec::RedrafterHead head = spec::RedrafterHead::load(options.drafter_dir);
    const ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
    if (head.config().hidden_size != config.hidden_size || head.config().vocab_size > config.vocab_size) {
      fail("{}: head for hidden {} / vocab {} does not fit the model's hidden {} / vocab {}", options.drafter_dir,
           head.config().hidden_size, head.config().vocab_size, config.hidden_size, config.vocab_size);
    }
    const Checkpoint checkpoint = Checkpoint::open(model_dir);
    std::vector<float> embeddings = tensor_to_f32(*ModelWeights::bind(checkpoint, config).embed_tokens);
    embeddings.resize(static_cast<size_t>(head.config().vocab_size) * static_cast<size_t>(config.hidden_size));
    return std::make_shared<spec::RedrafterDrafter>(
        std::move(head), std::move(embeddings),
        spec::RedrafterDrafterConfig{.num_beams = options.num_beams, .draft_len_per_beam = options.num_draft_tokens});
  }
  if (options.method == "ngram") {
    return std::make_shared<spec::NgramDrafter>(spec::NgramDrafterConfig{
        .num_draft_tokens = options.num_draft_tokens, .max_ngram = options.max_ngram, .min_ngram = 1});
  }
  fail("--spec: unknown method '{}' (none, ngram, redrafter)", options.method);
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

std::vector<BenchSpec> parse_bench_specs(const std::string& list, int draft_len, int beams) {
  std::vector<BenchSpec> specs;
  bool any_redrafter = false;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, comma - start);
    start = comma + 1;
    if (item.empty() || item == "none") continue;  // as --workloads: empty entries (a trailing comma) are skipped
    BenchSpec spec;
    spec.label = item;
    spec.options.num_draft_tokens = draft_len;
    spec.options.num_beams = beams;
    if (item.starts_with("oracle-p")) {
      spec.oracle_p = spec::parse_oracle_p(item);
      spec.options.method = "oracle";
    } else if (item.starts_with("synthetic-p")) {
      spec.synthetic_p = spec::parse_synthetic_p(item);
      spec.options.method = "synthetic";
    } else if (item == "ngram") {
      spec.options.method = "ngram";
    } else if (item.starts_with("redrafter:") && item.size() > 10) {
      spec.options.method = "redrafter";
      spec.options.drafter_dir = item.substr(10);
      spec.label = "redrafter";
      any_redrafter = true;
    } else {
      fail("--spec: unknown entry '{}' (none, oracle-p<P>, synthetic-p<P>, ngram, redrafter:<dir>)", item);
    }
    specs.push_back(std::move(spec));
  }
  if (beams != 1 && !any_redrafter) fail("--spec-beams {}: only redrafter:<dir> proposes several beams", beams);
  return specs;
}

}  // namespace qed
