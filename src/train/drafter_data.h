#pragma once
// Training sequences for the draft head, from jsonl. Each row is one of:
//   {"input_ids": [...], "labels": [...]?}  token ids as they are; labels (-100 = not supervised) default to the ids
//   {"text": "..."}                          tokenized raw, every token supervised
//   {"problem": "...", "generated_solution" | "solution" | "tir_solution": "..."}
//                                             a user turn + an assistant turn in the model's chat template; only the
//                                             assistant's tokens (through its end-of-turn) are supervised, as RD
//                                             masks the prompt. NS' OpenMathReasoning rows, and tools/demo's rows
//                                             (problem + tir_solution), train as they are.
// The prompt and the reply are tokenized separately and concatenated, as at inference (prompt, then generated ids).
#include <cstdint>
#include <string>
#include <vector>

#include "train/redrafter_loss.h"

namespace qed::train {

struct DrafterDataOptions {
  std::string path;
  int max_len = 2048;    // tokens per sequence at most (longer ones are cut, RD's model_max_length)
  int64_t rows = 50000;  // rows read at most, from the top of the file
  int vocab_size = 0;    // ids must be below it (the base model's vocab)
};

// Throws naming file:line on a malformed row, and when the file has no usable row (empty, or nothing supervised).
std::vector<Example> load_drafter_examples(const DrafterDataOptions& options, const std::string& model_dir);

}  // namespace qed::train
