#include "engine/simple_generator.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace qed {

GenerationResult SimpleGenerator::generate(std::span<const int32_t> prompt, const SamplingParams& params, uint64_t seed,
                                           const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) fail("generate: empty prompt");
  if (params.max_tokens < 0) fail("generate: max_tokens must be >= 0, got {}", params.max_tokens);
  const KvCacheLayout layout = backend_.kv_layout();
  // The last sampled token is never run through the model, so it needs no KV slot.
  const size_t slots_needed = prompt.size() + size_t(std::max(params.max_tokens - 1, 0));
  const size_t capacity = size_t(layout.num_blocks) * size_t(layout.block_size);
  if (slots_needed > capacity) {
    fail("generate: prompt ({} tokens) + max_tokens ({}) needs {} KV slots, the cache holds {}", prompt.size(),
         params.max_tokens, slots_needed, capacity);
  }

  std::vector<int32_t> stop_ids = params.stop_token_ids;
  if (!params.ignore_eos) {
    const auto& eos = backend_.config().eos_token_ids;
    stop_ids.insert(stop_ids.end(), eos.begin(), eos.end());
  }

  SequenceChunk chunk;
  chunk.tokens.assign(prompt.begin(), prompt.end());
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  GenerationResult result;
  result.finish_reason = "length";
  ForwardBatch batch;
  ForwardResult forward;
  for (int step = 0; step < params.max_tokens; ++step) {
    const size_t blocks =
        (size_t(chunk.num_cached) + chunk.tokens.size() + size_t(layout.block_size) - 1) / size_t(layout.block_size);
    chunk.block_table.resize(blocks);
    std::iota(chunk.block_table.begin(), chunk.block_table.end(), 0);
    batch.sequences.assign(1, chunk);
    backend_.forward(batch, forward);

    SampledToken sampled = sample_token(forward.logits, params, seed, uint64_t(step), history);
    const int32_t token = sampled.token;
    result.tokens.push_back(token);
    result.sampled.push_back(std::move(sampled));
    history.push_back(token);
    if (on_token) on_token(token);
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
      result.finish_reason = "stop";
      break;
    }
    chunk.num_cached += int32_t(chunk.tokens.size());
    chunk.tokens.assign(1, token);
  }
  return result;
}

}  // namespace qed
