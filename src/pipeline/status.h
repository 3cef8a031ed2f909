#pragma once
// `qed pipeline status DIR`: what each stage of the pipeline in DIR is doing, from the markers the stage scripts
// wrote and, for Slurm runs, what squeue/sacct say about the recorded jobs.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pipeline/layout.h"
#include "pipeline/spec.h"

namespace qed::pipeline {

struct StageStatus {
  std::string stage;
  // done | failed | running | pending | cancelled | not started | partial (some shards done) | a Slurm state
  std::string state;
  int shards_done = 0;
  int shards = 0;  // 0 for plain stages
  std::string job_id;
  std::string merge_job_id;
  std::string slurm;   // e.g. "COMPLETED", "RUNNING:2 PENDING:2", empty for local runs
  std::string detail;  // e.g. "exit code 3", the log to read
};

struct PipelineStatus {
  std::string name;
  std::string executor;
  std::string output_dir;
  std::vector<StageStatus> stages;  // dependency order

  bool all_done() const;
  nlohmann::json to_json() const;
  std::string to_table() const;
};

PipelineStatus pipeline_status(const OutputLayout& layout);

}  // namespace qed::pipeline
