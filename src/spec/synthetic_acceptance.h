#pragma once
// Synthetic acceptance: a cost model of speculative decoding at a chosen acceptance rate p, for benchmarks on
// random weights (whose near-flat logits make every real or replayed draft miss). The drafter proposes draft_len
// pseudo-random tokens; the engine's verification (EngineConfig::synthetic_acceptance, set only by qed bench
// offline) accepts draft position d iff every earlier one was accepted and a Bernoulli(p) coin keyed by (seed,
// sequence seed, absolute position) says yes, emitting the draft token there, and the target's own sampled token
// at the first rejected position. Forward shapes, accepted-token counts and KV bookkeeping are those of a real
// drafter at acceptance p; the tokens are not the model's, so outputs mean nothing: never for serving.
//
// The coin depends on its key only, so it is independent of batching and step boundaries; every absolute position
// is tested at most once (after a rejection the next draft starts one past the emitted token), so the coins a run
// observes are independent.
#include <cstdint>
#include <string>

#include "spec/drafter.h"

namespace qed::spec {

struct SyntheticAcceptance {
  double p = 0.6;
  uint64_t seed = 0;
};

// Whether the draft token at absolute position `position` of the sequence with sampling seed `sequence_seed` is
// accepted (given that every earlier draft position was).
bool synthetic_accepts(const SyntheticAcceptance& config, uint64_t sequence_seed, int64_t position);

// Proposes draft_len tokens (fewer near max_depth), a hash of (seed, position) each: any valid ids will do, since
// synthetic verification never compares them with the model's.
class SyntheticDrafter final : public Drafter {
 public:
  // Throws qed::Error unless p is in [0, 1], draft_len >= 1 and vocab_size >= 1.
  SyntheticDrafter(double p, int draft_len, int vocab_size, uint64_t seed);
  std::string name() const override;  // "synthetic-p0.6"
  double p() const { return p_; }
  DraftTree propose(const DraftContext& context) const override;

 private:
  double p_;
  int draft_len_;
  int vocab_size_;
  uint64_t seed_;
};

// P of a spec name "synthetic-p<P>"; -1 when `text` does not start with "synthetic-p". Throws qed::Error naming the
// text when P is not a number in [0, 1].
double parse_synthetic_p(const std::string& text);

}  // namespace qed::spec
