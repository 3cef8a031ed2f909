#pragma once
// Acceptance rules of speculative decoding.
//
// speculative_accept is the rule of Leviathan et al. 2023 / Chen et al. 2023 (arXiv 2211.17192), as ReDrafter's
// `_choose_from_candidates` applies it: a draft token d drawn from the drafter's distribution q is kept with
// probability min(1, p(d)/q(d)); otherwise the token is drawn from norm(max(0, p - q)). The result is distributed
// as the target p whatever q is, provided d really was drawn from q.
//
// The engine's drafters propose deterministic candidates (n-gram continuations, ReDrafter's beam search), i.e. q is
// a point mass. The rule then keeps d with probability p(d) and otherwise draws from p without d. The engine uses
// the coupled form of exactly that: it draws the target's token x ~ p with the sequence's own counter-based random
// stream (the draw the non-speculative path would make) and keeps d iff x == d. Same acceptance probability p(d),
// same residual, and the output is token-for-token what decoding without speculation produces for the seed.
// (Applying the q-ratio rule to beam-search candidates, as RD does, is not lossless: its README says so.)
#include <cstdint>
#include <span>

namespace qed::spec {

struct SpeculativeDraw {
  int32_t token = -1;
  bool accepted = false;  // the draft was kept (else `token` came from the residual)
};

// p, q: probability vectors over the vocabulary (each sums to 1); draft: the token drawn from q. u_accept,
// u_resample: independent uniforms in [0, 1).
SpeculativeDraw speculative_accept(std::span<const double> p, std::span<const double> q, int32_t draft, double u_accept,
                                   double u_resample);

// Inverse-CDF draw from unnormalised non-negative weights in index order (the last positive weight absorbs
// rounding); -1 if all are zero.
int32_t draw_from_weights(std::span<const double> weights, double u);

}  // namespace qed::spec
