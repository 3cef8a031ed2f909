#pragma once
// The bash script that runs one stage (one shard of it, for arrays): the same script runs under the local
// executor and as an sbatch job, so what a stage sees (env, services, markers) does not depend on the executor.
// It takes the shard index as $1 (local) or from SLURM_ARRAY_TASK_ID (Slurm), exits 0 at once when its `.done`
// marker matches the stage fingerprint (requeue and resume never redo finished work), starts the stage's
// services in the background, waits until each is healthy, runs the command, stops the services, and writes
// `.done` (fingerprint) or `.failed` (exit code).
#include <filesystem>
#include <string>

#include "pipeline/layout.h"
#include "pipeline/spec.h"

namespace qed::pipeline {

struct ScriptContext {
  const PipelineSpec& spec;
  const OutputLayout& layout;
  std::filesystem::path qed_bin;  // absolute; put first on PATH so `qed ...` in commands is this binary
  ExecutorKind executor = ExecutorKind::kLocal;
  std::string header;  // lines after the shebang (#SBATCH directives)
};

std::string stage_script(const ScriptContext& ctx, const Stage& stage);

// Slurm only: the follow-up job of an array stage that merges the shard outputs (deduplicated by merge_key)
// once every shard succeeded. The local executor merges in-process with the same function.
std::string merge_script(const ScriptContext& ctx, const Stage& stage);

// 'text' with single quotes escaped, for pasting into bash.
std::string shell_quote(const std::string& text);

// QED_DATA_<NAME> / QED_SERVICE_<NAME>_PORT: upper-case, anything not alnum becomes '_'.
std::string env_name(const std::string& name);

}  // namespace qed::pipeline
