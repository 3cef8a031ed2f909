#pragma once
// Submits a pipeline to Slurm: one sbatch job per stage (a job array for array stages, plus a merge job after
// it), chained with --dependency=afterok so Slurm runs them in order without us watching. Jobs are --requeue'able:
// a preempted task reruns its stage script, which skips finished work (markers) and leaves deduplication of
// resumed rows to the merge. Resubmitting after a failure or a cancel submits only what is not done.
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "pipeline/layout.h"
#include "pipeline/spec.h"

namespace qed::pipeline {

struct SlurmSubmitOptions {
  bool dry_run = false;  // write scripts and print the sbatch commands, submit nothing
};

// The #SBATCH lines for a stage's job (or its merge job).
std::string sbatch_header(const PipelineSpec& spec, const OutputLayout& layout, const Stage& stage, bool merge_job);

// Returns the number of jobs submitted (0 when everything was done already).
int submit_slurm(const PipelineSpec& spec, const OutputLayout& layout, const std::filesystem::path& qed_bin,
                 const SlurmSubmitOptions& options, std::ostream& progress);

// Job ids (stage jobs and merge jobs) recorded for the pipeline in `layout`.
std::vector<std::string> recorded_job_ids(const OutputLayout& layout);

// scancel every recorded job that is still queued or running; returns how many were cancelled.
int cancel_slurm(const OutputLayout& layout, std::ostream& progress);

// Polls the queue until none of the recorded jobs is pending or running; false on timeout (0 = no limit).
bool wait_slurm(const OutputLayout& layout, double timeout_s, double poll_s);

}  // namespace qed::pipeline
