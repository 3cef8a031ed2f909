#include "pipeline/status.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "pipeline/slurm_query.h"
#include "pipeline/state.h"

namespace qed::pipeline {

namespace {

// "RUNNING:2 PENDING:1" — counts of each Slurm state among a stage's tasks.
std::string summarize(const std::vector<std::string>& task_states) {
  std::map<std::string, int> counts;
  for (const auto& s : task_states) {
    if (!s.empty()) ++counts[s];
  }
  std::string out;
  for (const auto& [state, n] : counts) {
    out += (out.empty() ? "" : " ") + (task_states.size() == 1 ? state : fmt::format("{}:{}", state, n));
  }
  return out;
}

bool any_of_state(const std::vector<std::string>& states, std::initializer_list<const char*> wanted) {
  return std::any_of(states.begin(), states.end(), [&](const std::string& s) {
    return std::any_of(wanted.begin(), wanted.end(), [&](const char* w) { return s == w; });
  });
}

}  // namespace

bool PipelineStatus::all_done() const {
  return std::all_of(stages.begin(), stages.end(), [](const auto& s) { return s.state == "done"; });
}

nlohmann::json PipelineStatus::to_json() const {
  nlohmann::json j = {{"name", name}, {"executor", executor}, {"output_dir", output_dir}, {"all_done", all_done()}};
  j["stages"] = nlohmann::json::array();
  for (const auto& s : stages) {
    j["stages"].push_back({{"stage", s.stage},
                           {"state", s.state},
                           {"shards_done", s.shards_done},
                           {"shards", s.shards},
                           {"job_id", s.job_id},
                           {"merge_job_id", s.merge_job_id},
                           {"slurm", s.slurm},
                           {"detail", s.detail}});
  }
  return j;
}

std::string PipelineStatus::to_table() const {
  std::vector<std::vector<std::string>> rows = {{"STAGE", "STATE", "SHARDS", "JOBS", "SLURM", "DETAIL"}};
  for (const auto& s : stages) {
    std::string jobs = s.job_id;
    if (!s.merge_job_id.empty()) jobs += fmt::format("{}{}", jobs.empty() ? "" : ",", s.merge_job_id);
    rows.push_back({s.stage, s.state, s.shards ? fmt::format("{}/{}", s.shards_done, s.shards) : "-",
                    jobs.empty() ? "-" : jobs, s.slurm.empty() ? "-" : s.slurm, s.detail});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  }
  std::string out = fmt::format("pipeline {} ({}) in {}\n", name, executor, output_dir);
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) line += fmt::format("{:<{}}  ", r[c], width[c]);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

PipelineStatus pipeline_status(const OutputLayout& layout) {
  const PipelineSpec spec = load_spec_snapshot(layout);
  const auto state = load_state(layout);
  PipelineStatus status{spec.name, state->executor, layout.root.string(), {}};

  std::vector<std::string> ids;
  for (const auto& [stage, jobs] : state->jobs) {
    if (!jobs.job_id.empty()) ids.push_back(jobs.job_id);
    if (!jobs.merge_job_id.empty()) ids.push_back(jobs.merge_job_id);
  }
  const JobStates slurm = ids.empty() ? JobStates{} : query_job_states(ids);

  for (const auto& name : topological_order(spec)) {
    const Stage& stage = spec.stage(name);
    const std::string fingerprint = stage_fingerprint(spec, stage);
    StageStatus row;
    row.stage = name;
    row.shards = stage.shards;
    const auto jobs_it = state->jobs.find(name);
    if (jobs_it != state->jobs.end()) {
      row.job_id = jobs_it->second.job_id;
      row.merge_job_id = jobs_it->second.merge_job_id;
    }

    // Per task: marker first (authoritative: written by the task itself), Slurm's word otherwise.
    std::vector<std::string> task_slurm;
    bool task_failed = false;
    int exit_code = 0;
    for (int i = 0; i < stage.num_tasks(); ++i) {
      const auto marker = stage.is_array() ? layout.shard_marker(name, i) : layout.marker(name);
      const MarkerState m = read_marker(marker, fingerprint, &exit_code);
      if (m == MarkerState::kDone) ++row.shards_done;
      if (m == MarkerState::kFailed) task_failed = true;
      task_slurm.push_back(task_state(slurm, row.job_id, stage.is_array() ? i : -1));
    }
    if (!row.merge_job_id.empty()) task_slurm.push_back(task_state(slurm, row.merge_job_id, -1));
    row.slurm = summarize(task_slurm);

    int stage_exit = 0;
    const MarkerState stage_marker = read_marker(layout.marker(name), fingerprint, &stage_exit);
    if (stage_marker == MarkerState::kDone) {
      row.state = "done";
    } else if (task_failed || stage_marker == MarkerState::kFailed) {
      row.state = "failed";
      row.detail =
          fmt::format("exit code {}; see {}", task_failed ? exit_code : stage_exit, layout.logs_dir().string());
    } else if (any_of_state(task_slurm, {"RUNNING", "COMPLETING", "CONFIGURING"})) {
      row.state = "running";
    } else if (any_of_state(task_slurm, {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED"})) {
      row.state = "pending";
    } else if (any_of_state(task_slurm, {"CANCELLED"})) {
      row.state = "cancelled";
    } else if (any_of_state(task_slurm, {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                                         "DEADLINE"})) {
      row.state = "failed";
      row.detail = "Slurm: " + row.slurm;
    } else if (row.shards_done > 0) {
      row.state = "partial";
    } else {
      row.state = "not started";
    }
    status.stages.push_back(row);
  }
  return status;
}

}  // namespace qed::pipeline
