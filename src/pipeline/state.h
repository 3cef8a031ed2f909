#pragma once
// What a run leaves in <out>/.pipeline besides markers: the spec it ran (so `status DIR` and `cancel DIR` need
// nothing else) and, on Slurm, the job ids of each stage.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/layout.h"
#include "pipeline/spec.h"

namespace qed::pipeline {

struct StageJobs {
  std::string job_id;        // the stage's job (an array job for array stages)
  std::string merge_job_id;  // array stages: the follow-up merge job
  std::vector<int> shards;   // array stages: the shards this submission runs (others were done already)
  std::string submitted_at;  // UTC, ISO 8601
};

struct PipelineState {
  std::string executor;  // "local" | "slurm"
  std::filesystem::path spec_path;
  std::map<std::string, StageJobs> jobs;  // Slurm only; the latest submission of each stage
};

void save_state(const OutputLayout& layout, const PipelineState& state);
std::optional<PipelineState> load_state(const OutputLayout& layout);

// Records spec + executor in the output dir at the start of a run.
void save_spec_snapshot(const OutputLayout& layout, const PipelineSpec& spec);

// The spec as the last run saw it, with paths resolved against the original spec's directory.
// Fails with a clear message when DIR is not a pipeline output dir.
PipelineSpec load_spec_snapshot(const OutputLayout& layout);

enum class MarkerState { kNone, kDone, kFailed };

// kDone only when the .done marker holds `fingerprint` (a stale one from an edited stage counts as kNone).
MarkerState read_marker(const std::filesystem::path& marker, const std::string& fingerprint, int* exit_code = nullptr);

// Writes <marker>.done atomically.
void write_done_marker(const std::filesystem::path& marker, const std::string& fingerprint);

bool stage_done(const PipelineSpec& spec, const OutputLayout& layout, const Stage& stage);

std::string utc_now_iso();

}  // namespace qed::pipeline
