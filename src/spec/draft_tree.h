#pragma once
// The candidates a drafter proposes for one sequence: a tree of tokens rooted at the sequence's last token (whose
// next token the base model is about to produce). A linear draft is a tree with one child per node; ReDrafter's
// beams become a prefix tree (shared beam prefixes verified once). Nodes are stored parents-before-children, so
// every prefix of the node list is itself a tree: the scheduler may cut a draft to its token budget by keeping the
// first nodes.
#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"

namespace qed::spec {

struct DraftTree {
  std::vector<int32_t> tokens;   // node i's token
  std::vector<int32_t> parents;  // node i's parent: an earlier node, or -1 for the root (the last known token)

  static DraftTree linear(std::span<const int32_t> tokens);
  // Merges beams (each a token path below the root) into a prefix tree: equal prefixes share nodes, as
  // ReDrafter's beam_to_prefix_tree dedup. Beams are laid out in order, so beam 0's path is contiguous.
  static DraftTree from_beams(const std::vector<std::vector<int32_t>>& beams);

  size_t size() const { return tokens.size(); }
  bool empty() const { return tokens.empty(); }
  // Depth of node i below the root (a child of the root has depth 1).
  int depth(size_t node) const;
  int max_depth() const;
  // The first of the first `limit` nodes that is a child of `parent` (-1 = root) carrying `token`, or -1.
  int32_t child_with_token(int32_t parent, int32_t token, size_t limit) const;
  // The first of the first `limit` nodes that is a child of `parent`, or -1.
  int32_t first_child(int32_t parent, size_t limit) const;
  void clear() {
    tokens.clear();
    parents.clear();
  }
};

// Throws qed::Error unless parents and tokens have one entry per node, every parent precedes its child, and every
// token is in [0, vocab_size).
void validate_draft(const DraftTree& tree, int vocab_size);

// Appends the first `num_nodes` nodes of `tree` to a chunk that already holds a sequence's uncomputed known tokens
// (causal among themselves, the last of them at RoPE position root_position): each node gets position
// root_position + depth, sees every known token of the chunk plus its own ancestors and itself, and its logits row
// is requested after the last known token's row (rows: last known token, then nodes in order).
void append_draft_to_chunk(const DraftTree& tree, size_t num_nodes, int32_t root_position, SequenceChunk& chunk);

}  // namespace qed::spec
