#pragma once
// A synthetic drafter of known quality, for measuring what speculation buys as a function of acceptance: it knows
// each sequence's true continuation (recorded from the target model itself, decoding without drafts) and proposes
// draft_len tokens, each the recorded one with probability p, independently, and a wrong one otherwise. Proposals
// go through the engine's usual verification, so what is accepted is measured, not assumed: a verifier accepts the
// leading run of right tokens (expected sum of p^i for i = 1..draft_len) unless the run has left the record.
//
// The truth is looked up by content: a sequence's context (prompt + generated so far) must be a prefix of one
// recorded sequence. A speculative run can leave its record where the target's logits are near a tie and the
// verify chunk's arithmetic differs from the one-token decode's (bf16 GEMMs of another shape); from there on no
// truth is known and the oracle proposes nothing for that sequence (counted in Counters::unknown_context), so the
// measured acceptance and speedup include the loss instead of hiding it.
//
// The coin of the token at absolute position t of recorded sequence r is a hash of (seed, r, t): deterministic and
// independent of batching, of step boundaries and of how often the scheduler asks, and independent across the
// positions a verifier observes (a position re-proposed after a rejection was never looked at before).
#include <atomic>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "spec/drafter.h"

namespace qed::spec {

struct RecordedSequence {
  std::vector<int32_t> tokens;  // prompt + continuation, as the target model produced it without drafts
  size_t prompt_tokens = 0;
};

struct OracleDrafterConfig {
  double p = 0.6;     // probability that a proposed token is the recorded one
  int draft_len = 3;  // tokens proposed per step (fewer near a record's end or max_tokens)
  int vocab_size = 0;
  uint64_t seed = 0;
};

class OracleDrafter final : public Drafter {
 public:
  // Throws qed::Error unless p is in [0, 1], draft_len >= 1, vocab_size >= 2, and every record has a prompt and
  // tokens inside the vocabulary.
  OracleDrafter(OracleDrafterConfig config, std::vector<RecordedSequence> records);

  std::string name() const override;  // "oracle-p0.6"
  DraftTree propose(const DraftContext& context) const override;

  struct Counters {
    int64_t proposals = 0;        // calls that proposed a draft
    int64_t unknown_context = 0;  // calls whose next token no record tells (off every record): nothing proposed
  };
  Counters counters() const { return {proposals_.load(), unknown_context_.load()}; }

 private:
  // Records whose tokens start with `context` and go on past it; the first is the one the coins follow.
  std::vector<size_t> records_continuing(std::span<const int32_t> context) const;

  OracleDrafterConfig config_;
  std::vector<RecordedSequence> records_;
  size_t key_tokens_ = 0;  // the shortest prompt: records are indexed by a hash of their first key_tokens_
  std::unordered_map<uint64_t, std::vector<size_t>> records_by_key_;
  // The engine asks from one thread, but the drafter is shared (const) and counting must not race if it is not.
  mutable std::atomic<int64_t> proposals_{0};
  mutable std::atomic<int64_t> unknown_context_{0};
};

// P of a spec name "oracle-p<P>" (oracle-p0.6, oracle-p1); -1 when `text` does not start with "oracle-p".
// Throws qed::Error naming the text when P is not a number in [0, 1].
double parse_oracle_p(const std::string& text);

}  // namespace qed::spec
