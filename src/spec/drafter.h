#pragma once
// What the engine asks of a drafter: candidate continuations of one sequence, verified by the base model in the
// next forward. Drafters propose deterministic candidates (point masses), which the engine verifies by drawing the
// target's own token and following the matching child; see speculative_sampling.h for why that is lossless.
#include <cstdint>
#include <span>
#include <string>

#include "spec/draft_tree.h"

namespace qed::spec {

struct DraftContext {
  std::span<const int32_t> tokens;  // prompt + everything generated (and inserted) so far
  int max_depth = 0;                // deepest node the engine can still use (max_tokens, context length)
  // The base model's final-norm hidden state at the row that produced the last token (ReDrafter's context), when
  // the drafter wants_hidden() and the engine has it; else empty.
  std::span<const float> hidden;
};

class Drafter {
 public:
  virtual ~Drafter() = default;
  virtual std::string name() const = 0;
  // Whether proposals need DraftContext::hidden (the engine then asks the backend for hidden states).
  virtual bool wants_hidden() const { return false; }
  // Candidates below the last token of `context.tokens`, none deeper than context.max_depth; may be empty.
  virtual DraftTree propose(const DraftContext& context) const = 0;
};

}  // namespace qed::spec
