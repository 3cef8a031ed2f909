#pragma once
// Early stop for sampled ensembles (AIMO style): a policy fed with the texts of samples as they finish decides
// when the rest of the ensemble is not worth waiting for. The AIMO-2 entry cancelled a batch of 16 once 4-5 answers
// agreed, and the NeMo-Skills demo keeps the first 10 of 12 generations; a deadline ends everything that is left.
// The policy is pure bookkeeping (no clock, no engine); EarlyStopGroups applies its decisions.
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "server/openai_protocol.h"

namespace qed::server {

// Why the remaining samples were cut; names are what responses carry in `qed.cut`.
enum class CutReason { None, TimeBudget, StopAfterFirst, Consensus };
const char* cut_reason_name(CutReason reason);

// The contents of the LAST `\boxed{...}` in `text`, braces matched, as NeMo-Skills' search_boxed: nullopt when
// there is no `\boxed`, when the last one is not followed by `{`, or when its braces never close.
std::optional<std::string> last_boxed_answer(std::string_view text);

bool has_early_stop(const EarlyStop& config);

class EarlyStopPolicy {
 public:
  explicit EarlyStopPolicy(EarlyStop config) : config_(config) {}

  // A sample ended by itself (stop or length; not one that was cut). Returns the decision, which never changes
  // once made: later calls return the same reason.
  CutReason on_sample_finished(std::string_view text);
  // The deadline passed before any other reason fired.
  CutReason on_deadline();

  CutReason decision() const { return decision_; }
  int num_finished() const { return num_finished_; }
  // The answer with the most votes (the consensus answer once that fired); nullopt before any boxed answer.
  std::optional<std::string> leading_answer() const;
  int votes(const std::string& answer) const;
  const EarlyStop& config() const { return config_; }

 private:
  EarlyStop config_;
  CutReason decision_ = CutReason::None;
  int num_finished_ = 0;
  std::map<std::string, int> votes_;
};

}  // namespace qed::server
