#pragma once
// Merging the per-shard outputs of an array stage into one jsonl file. A shard that was preempted and rerun may
// have written some rows twice (once before the kill, once after), so rows are deduplicated by a key field:
// the first row with a given key wins, in shard order then file order.
#include <filesystem>
#include <string>
#include <vector>

namespace qed::pipeline {

struct MergeStats {
  size_t rows = 0;            // written to the merged file
  size_t duplicates = 0;      // dropped because their key was already seen
  size_t truncated = 0;       // unterminated last lines (a writer killed mid-row), dropped
  size_t missing_shards = 0;  // shard files that do not exist (a shard with nothing to write), counted as empty
};

// Rows without `key` are deduplicated by their whole text. A row that is not a JSON object fails with
// `file:line`, except an unterminated last line, which is what a killed writer leaves behind.
// Writes `output` atomically (temp file + rename): readers never see a half-merged file.
MergeStats merge_jsonl(const std::vector<std::filesystem::path>& shards, const std::string& key,
                       const std::filesystem::path& output);

}  // namespace qed::pipeline

#include "pipeline/layout.h"
#include "pipeline/spec.h"

namespace qed::pipeline {

// Merges an array stage's shard outputs into <out>/<output> once every shard's .done marker is current;
// fails naming the shards that are not done.
MergeStats merge_array_stage(const PipelineSpec& spec, const OutputLayout& layout, const Stage& stage);

}  // namespace qed::pipeline
