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
// truth is known. The oracle then keeps proposing draft_len tokens, the record's at those positions (the one
// sharing the longest prefix), which the verifier mostly rejects: the measured acceptance falls and says so, and
// every step keeps the shape a drafter of this length gives it, so a run that replays records made by an earlier
// speculative run (bench offline --oracle-passes) batches like that run did, and with deterministic kernels makes
// the same choices at its near-ties (until acceptance differences move where sequences finish).
// Such blind proposals, and those past the point where several records through the context part, are counted.
//
// The coin of the token at absolute position t of recorded sequence r is a hash of (seed, r, t): deterministic and
// independent of batching, of step boundaries and of how often the scheduler asks, and independent across the
// positions a verifier observes (a position re-proposed after a rejection was never looked at before).
#include <atomic>
#include <cstdint>
#include <optional>
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
    int64_t proposals = 0;      // calls that proposed a draft
    int64_t without_truth = 0;  // calls whose draft (or part of it) no record vouches for, or got none
  };
  Counters counters() const { return {proposals_.load(), without_truth_.load()}; }

 private:
  struct Lookup {
    std::vector<size_t> continuing;    // records whose tokens start with the context and go on past it
    std::optional<size_t> off_record;  // none continuing: the record of the same prompt sharing the longest prefix
  };
  Lookup look_up(std::span<const int32_t> context) const;

  OracleDrafterConfig config_;
  std::vector<RecordedSequence> records_;
  size_t key_tokens_ = 0;  // the shortest prompt: records are indexed by a hash of their first key_tokens_
  std::unordered_map<uint64_t, std::vector<size_t>> records_by_key_;
  // The engine asks from one thread, but the drafter is shared (const) and counting must not race if it is not.
  mutable std::atomic<int64_t> proposals_{0};
  mutable std::atomic<int64_t> without_truth_{0};
};

// P of a spec name "oracle-p<P>" (oracle-p0.6, oracle-p1); -1 when `text` does not start with "oracle-p".
// Throws qed::Error naming the text when P is not a number in [0, 1].
double parse_oracle_p(const std::string& text);

}  // namespace qed::spec
