#pragma once
// Where a pipeline keeps things in its output dir. Both executors and `qed pipeline status` read the same paths:
//   <out>/logs/                       per-stage (and per-service) logs
//   <out>/shards/<stage>/             per-shard outputs of array stages, merged into <out>/<output>
//   <out>/.pipeline/spec.yaml         the spec the last run used (status/cancel need only the dir)
//   <out>/.pipeline/state.json        executor, job ids, submission times
//   <out>/.pipeline/scripts/          the generated stage scripts (bash; sbatch scripts on Slurm)
//   <out>/.pipeline/status/           markers: <stage>[.shard-<i>].done holds the stage fingerprint, .failed the exit
//                                     code. Written by the stage scripts themselves, so a Slurm job that finishes
//                                     while nobody watches still records its outcome.
#include <filesystem>
#include <string>

#include "pipeline/spec.h"

namespace qed::pipeline {

struct OutputLayout {
  std::filesystem::path root;

  std::filesystem::path meta_dir() const { return root / ".pipeline"; }
  std::filesystem::path spec_copy() const { return meta_dir() / "spec.yaml"; }
  std::filesystem::path state_file() const { return meta_dir() / "state.json"; }
  std::filesystem::path scripts_dir() const { return meta_dir() / "scripts"; }
  std::filesystem::path status_dir() const { return meta_dir() / "status"; }
  std::filesystem::path logs_dir() const { return root / "logs"; }

  std::filesystem::path stage_script(const std::string& stage) const { return scripts_dir() / (stage + ".sh"); }
  std::filesystem::path merge_script(const std::string& stage) const { return scripts_dir() / (stage + ".merge.sh"); }
  // Marker path without extension: ".done" / ".failed" get appended.
  std::filesystem::path marker(const std::string& stage) const { return status_dir() / stage; }
  std::filesystem::path shard_marker(const std::string& stage, int shard) const {
    return status_dir() / (stage + ".shard-" + std::to_string(shard));
  }
  std::filesystem::path output(const Stage& stage) const { return root / stage.output; }
  std::filesystem::path shard_output(const Stage& stage, int shard) const;
  void create_dirs() const;
};

// A hash of everything that decides what a stage computes (command, args, env, shards, services, setup, data):
// a `.done` marker counts only while the stage is unchanged, so editing a stage reruns it.
std::string stage_fingerprint(const PipelineSpec& spec, const Stage& stage);

}  // namespace qed::pipeline
