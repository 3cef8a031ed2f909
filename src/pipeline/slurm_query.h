#pragma once
// Asking Slurm what became of jobs: squeue for live jobs, sacct for finished ones (needs accounting storage),
// `scontrol show job` when sacct is unavailable (it only remembers jobs for MinJobAge seconds).
#include <map>
#include <string>
#include <vector>

namespace qed::pipeline {

// Keys are Slurm's job ids as printed: "41" for a plain job, "42_3" for array task 3, "42_[0-3]" for pending
// tasks sacct has not split yet. Values are states: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
using JobStates = std::map<std::string, std::string>;

// Jobs (and array tasks) of `job_ids` still in the queue.
JobStates query_queue(const std::vector<std::string>& job_ids);

// Live states from the queue, completed with sacct (or scontrol) for jobs that left it.
JobStates query_job_states(const std::vector<std::string>& job_ids);

// The state of one task: `job_id` itself, or task `shard` of array job `job_id` (falling back to the state of
// a pending range that contains it, then to the array job's own entry). Empty when Slurm knows nothing.
std::string task_state(const JobStates& states, const std::string& job_id, int shard);

}  // namespace qed::pipeline
