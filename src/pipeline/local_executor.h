#pragma once
// Runs a pipeline on this machine: stages in dependency order, one at a time (array shards one after another),
// each through its generated stage script with output in <out>/logs/. A finished stage is skipped on the next
// run; a failed one reruns (for arrays, only the shards that did not finish); stages whose needs failed wait.
#include <filesystem>
#include <ostream>

#include "pipeline/layout.h"
#include "pipeline/spec.h"

namespace qed::pipeline {

struct LocalRunResult {
  int ran = 0;
  int skipped = 0;  // already done
  int failed = 0;
  int blocked = 0;  // not run because something they need failed
  bool ok() const { return failed == 0 && blocked == 0; }
};

LocalRunResult run_local(const PipelineSpec& spec, const OutputLayout& layout, const std::filesystem::path& qed_bin,
                         std::ostream& progress);

}  // namespace qed::pipeline
