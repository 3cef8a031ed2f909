#include "spec/draft_tree.h"

#include <algorithm>

#include "core/error.h"

namespace qed::spec {

DraftTree DraftTree::linear(std::span<const int32_t> tokens) {
  DraftTree tree;
  for (size_t i = 0; i < tokens.size(); ++i) {
    tree.tokens.push_back(tokens[i]);
    tree.parents.push_back(static_cast<int32_t>(i) - 1);
  }
  return tree;
}

DraftTree DraftTree::from_beams(const std::vector<std::vector<int32_t>>& beams) {
  DraftTree tree;
  for (const std::vector<int32_t>& beam : beams) {
    int32_t node = -1;
    for (int32_t token : beam) {
      int32_t child = tree.child_with_token(node, token, tree.size());
      if (child < 0) {
        child = static_cast<int32_t>(tree.size());
        tree.tokens.push_back(token);
        tree.parents.push_back(node);
      }
      node = child;
    }
  }
  return tree;
}

int DraftTree::depth(size_t node) const {
  int d = 0;
  for (int32_t i = static_cast<int32_t>(node); i >= 0; i = parents[static_cast<size_t>(i)]) ++d;
  return d;
}

int DraftTree::max_depth() const {
  int best = 0;
  for (size_t i = 0; i < size(); ++i) best = std::max(best, depth(i));
  return best;
}

int32_t DraftTree::child_with_token(int32_t parent, int32_t token, size_t limit) const {
  const size_t n = std::min(limit, size());
  for (size_t i = 0; i < n; ++i) {
    if (parents[i] == parent && tokens[i] == token) return static_cast<int32_t>(i);
  }
  return -1;
}

int32_t DraftTree::first_child(int32_t parent, size_t limit) const {
  const size_t n = std::min(limit, size());
  for (size_t i = 0; i < n; ++i) {
    if (parents[i] == parent) return static_cast<int32_t>(i);
  }
  return -1;
}

void validate_draft(const DraftTree& tree, int vocab_size) {
  if (tree.parents.size() != tree.tokens.size()) {
    fail("draft: {} parents for {} tokens", tree.parents.size(), tree.tokens.size());
  }
  for (size_t i = 0; i < tree.size(); ++i) {
    if (tree.parents[i] < -1 || tree.parents[i] >= static_cast<int32_t>(i)) {
      fail("draft: node {} has parent {}; a parent must be -1 (the root) or an earlier node", i, tree.parents[i]);
    }
    if (tree.tokens[i] < 0 || tree.tokens[i] >= vocab_size) {
      fail("draft: node {} token {} is outside the vocabulary [0, {})", i, tree.tokens[i], vocab_size);
    }
  }
}

void append_draft_to_chunk(const DraftTree& tree, size_t num_nodes, int32_t root_position, SequenceChunk& chunk) {
  const size_t known = chunk.tokens.size();
  if (known == 0) fail("draft: a chunk needs the sequence's last token before its draft");
  num_nodes = std::min(num_nodes, tree.size());
  const size_t total = known + num_nodes;
  std::vector<uint8_t> mask(total * total, 0);
  for (size_t i = 0; i < known; ++i) {
    for (size_t j = 0; j <= i; ++j) mask[i * total + j] = 1;
  }
  if (chunk.positions.empty()) {
    for (size_t i = 0; i < known; ++i) chunk.positions.push_back(root_position - static_cast<int32_t>(known - 1 - i));
  }
  for (size_t node = 0; node < num_nodes; ++node) {
    const size_t row = known + node;
    for (size_t j = 0; j < known; ++j) mask[row * total + j] = 1;
    for (int32_t a = static_cast<int32_t>(node); a >= 0; a = tree.parents[static_cast<size_t>(a)]) {
      mask[row * total + known + static_cast<size_t>(a)] = 1;
    }
    chunk.tokens.push_back(tree.tokens[node]);
    chunk.positions.push_back(root_position + tree.depth(node));
  }
  chunk.attention_mask = std::move(mask);
  chunk.logits_indices.clear();
  for (size_t row = known - 1; row < total; ++row) chunk.logits_indices.push_back(static_cast<int32_t>(row));
}

}  // namespace qed::spec
