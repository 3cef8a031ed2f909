#include "pipeline/state.h"

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace qed::pipeline {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Temp file + rename: a run killed mid-write never leaves a half state file.
void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) fail("{}: cannot write", tmp.string());
  }
  fs::rename(tmp, path);
}

}  // namespace

std::string utc_now_iso() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void save_state(const OutputLayout& layout, const PipelineState& state) {
  nlohmann::json j;
  j["executor"] = state.executor;
  j["spec_path"] = state.spec_path.string();
  j["jobs"] = nlohmann::json::object();
  for (const auto& [stage, jobs] : state.jobs) {
    j["jobs"][stage] = {{"job_id", jobs.job_id},
                        {"merge_job_id", jobs.merge_job_id},
                        {"shards", jobs.shards},
                        {"submitted_at", jobs.submitted_at}};
  }
  write_atomically(layout.state_file(), j.dump(2) + "\n");
}

std::optional<PipelineState> load_state(const OutputLayout& layout) {
  const std::string text = read_text(layout.state_file());
  if (text.empty()) return std::nullopt;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail("{}: not a valid state file", layout.state_file().string());
  PipelineState state;
  try {
    state.executor = j.at("executor").get<std::string>();
    state.spec_path = j.at("spec_path").get<std::string>();
    for (const auto& [stage, v] : j.at("jobs").items()) {
      StageJobs jobs;
      jobs.job_id = v.at("job_id").get<std::string>();
      jobs.merge_job_id = v.at("merge_job_id").get<std::string>();
      jobs.shards = v.at("shards").get<std::vector<int>>();
      jobs.submitted_at = v.at("submitted_at").get<std::string>();
      state.jobs[stage] = jobs;
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: bad state file: {}", layout.state_file().string(), e.what());
  }
  return state;
}

void save_spec_snapshot(const OutputLayout& layout, const PipelineSpec& spec) {
  layout.create_dirs();
  const std::string text = read_text(spec.spec_path);
  if (text.empty()) fail("{}: cannot read spec", spec.spec_path.string());
  write_atomically(layout.spec_copy(), text);
}

PipelineSpec load_spec_snapshot(const OutputLayout& layout) {
  const auto state = load_state(layout);
  if (!state || !fs::exists(layout.spec_copy())) {
    fail("{}: not a pipeline output dir (no .pipeline/state.json; run `qed pipeline run SPEC` first)",
         layout.root.string());
  }
  // Parsed as if it sat at its original path, so relative data paths and the working dir stay the same.
  PipelineSpec spec = parse_spec(read_text(layout.spec_copy()), state->spec_path);
  spec.output_dir = layout.root;
  return spec;
}

MarkerState read_marker(const fs::path& marker, const std::string& fingerprint, int* exit_code) {
  std::string done = read_text(marker.string() + ".done");
  while (!done.empty() && (done.back() == '\n' || done.back() == ' ')) done.pop_back();
  if (done == fingerprint) return MarkerState::kDone;
  const fs::path failed = marker.string() + ".failed";
  if (fs::exists(failed)) {
    if (exit_code) {
      try {
        *exit_code = std::stoi(read_text(failed));
      } catch (const std::exception&) {
        *exit_code = 1;
      }
    }
    return MarkerState::kFailed;
  }
  return MarkerState::kNone;
}

void write_done_marker(const fs::path& marker, const std::string& fingerprint) {
  fs::remove(marker.string() + ".failed");
  write_atomically(marker.string() + ".done", fingerprint + "\n");
}

bool stage_done(const PipelineSpec& spec, const OutputLayout& layout, const Stage& stage) {
  return read_marker(layout.marker(stage.name), stage_fingerprint(spec, stage)) == MarkerState::kDone;
}

}  // namespace qed::pipeline
