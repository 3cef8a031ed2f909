#include "server/early_stop.h"

namespace qed::server {

const char* cut_reason_name(CutReason reason) {
  switch (reason) {
    case CutReason::None:
      return "none";
    case CutReason::TimeBudget:
      return "time_budget";
    case CutReason::StopAfterFirst:
      return "stop_after_first";
    case CutReason::Consensus:
      return "consensus";
  }
  return "none";
}

std::optional<std::string> last_boxed_answer(std::string_view text) {
  constexpr std::string_view kBoxed = "\\boxed";
  const size_t at = text.rfind(kBoxed);
  if (at == std::string_view::npos) return std::nullopt;
  const size_t open = at + kBoxed.size();
  if (open >= text.size() || text[open] != '{') return std::nullopt;
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    if (text[i] == '{') {
      ++depth;
    } else if (text[i] == '}' && --depth == 0) {
      return std::string(text.substr(open + 1, i - open - 1));
    }
  }
  return std::nullopt;
}

bool has_early_stop(const EarlyStop& config) {
  return config.time_budget_s.has_value() || config.stop_after_first.has_value() || config.consensus.has_value();
}

CutReason EarlyStopPolicy::on_sample_finished(std::string_view text) {
  if (decision_ != CutReason::None) return decision_;
  ++num_finished_;
  if (auto answer = last_boxed_answer(text)) {
    const int n = ++votes_[*answer];
    if (config_.consensus && n >= *config_.consensus) {
      decision_ = CutReason::Consensus;
      return decision_;
    }
  }
  if (config_.stop_after_first && num_finished_ >= *config_.stop_after_first) decision_ = CutReason::StopAfterFirst;
  return decision_;
}

CutReason EarlyStopPolicy::on_deadline() {
  if (decision_ == CutReason::None) decision_ = CutReason::TimeBudget;
  return decision_;
}

std::optional<std::string> EarlyStopPolicy::leading_answer() const {
  std::optional<std::string> best;
  int best_votes = 0;
  for (const auto& [answer, n] : votes_) {
    if (n > best_votes) {
      best = answer;
      best_votes = n;
    }
  }
  return best;
}

int EarlyStopPolicy::votes(const std::string& answer) const {
  auto it = votes_.find(answer);
  return it == votes_.end() ? 0 : it->second;
}

}  // namespace qed::server
