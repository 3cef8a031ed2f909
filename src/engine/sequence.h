#pragma once
// One generated continuation: its tokens (prompt + generated), how many of them have K/V in the cache, and the KV
// blocks holding them. A request with n > 1 owns n sequences that share the prompt blocks after the prefill.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/sampling.h"

namespace qed {

using RequestId = int64_t;
using Clock = std::chrono::steady_clock;

// Held: paused at a hold string, out of the scheduler's queues; its blocks stay until resume (or an eviction
// under memory pressure, after which it recomputes).
enum class SequenceStatus { Waiting, Running, Held, Finished };

// vLLM's names, so the server can pass them through unchanged. Error: the request could never run (its prompt
// alone exceeds the KV cache or the model's context); `error` on the output says why.
enum class FinishReason { None, Stop, Length, Abort, Error };
const char* finish_reason_name(FinishReason reason);

struct Sequence {
  int64_t seq_id = 0;
  RequestId request_id = 0;
  int index = 0;  // 0..n-1 within its request
  std::vector<int32_t> tokens;
  int num_prompt_tokens = 0;
  // Tokens appended by Engine::resume (tool output): part of the context, not generated, so outside max_tokens.
  int num_inserted_tokens = 0;
  // Tokens whose K/V is in the cache (slots [0, num_computed)). Preemption resets it to 0; the prefix cache may
  // raise it at admission without running anything.
  int num_computed = 0;
  std::vector<int32_t> block_table;
  // Chained hashes of the leading full blocks whose K/V is computed (block_hashes.size() ≤ block_table.size()).
  std::vector<uint64_t> block_hashes;
  SequenceStatus status = SequenceStatus::Waiting;
  FinishReason finish_reason = FinishReason::None;
  uint64_t seed = 0;  // this sequence's sampling stream (see derive_sequence_seed)
  Clock::time_point arrival;
  int64_t arrival_order = 0;  // FIFO priority; forks inherit their parent's

  int num_tokens() const { return static_cast<int>(tokens.size()); }
  int num_generated() const { return num_tokens() - num_prompt_tokens - num_inserted_tokens; }
  int num_uncomputed() const { return num_tokens() - num_computed; }
  bool is_finished() const { return status == SequenceStatus::Finished; }
};

// Seed of sequence `index` of a request seeded with `request_seed`. Index 0 keeps the seed itself, so an n = 1
// request and the first sequence of an n > 1 request with the same seed draw the same tokens.
uint64_t derive_sequence_seed(uint64_t request_seed, int index);

}  // namespace qed
