#pragma once
// The checks every backend runs on a ForwardBatch before touching its cache: a malformed batch is an engine bug, but
// it must surface as a one-line qed::Error, never as a write outside the cache (or, on a GPU, an illegal access).
#include "backend/backend.h"

namespace qed {

void validate_forward_batch(const ForwardBatch& batch, int vocab_size, const KvCacheLayout& layout);

// copy_kv_blocks' pairs must name blocks inside the cache.
void validate_block_pairs(std::span<const std::pair<int32_t, int32_t>> src_dst, int num_blocks);

}  // namespace qed
