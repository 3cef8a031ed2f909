#include "pipeline/slurm_executor.h"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "pipeline/process.h"
#include "pipeline/slurm_query.h"
#include "pipeline/stage_script.h"
#include "pipeline/state.h"

namespace qed::pipeline {

namespace fs = std::filesystem;

namespace {

void write_script(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) fail("{}: cannot write", path.string());
  fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
}

std::string array_list(const std::vector<int>& shards) {
  std::string out;
  for (int s : shards) {
    if (!out.empty()) out += ',';
    out += std::to_string(s);
  }
  return out;
}

// `sbatch --parsable` prints "jobid" or "jobid;cluster".
std::string submit(const std::vector<std::string>& argv) {
  const auto r = run_capture(argv);
  std::string id = r.out.substr(0, r.out.find_first_of(";\n"));
  if (r.exit_code != 0 || id.empty() || id.find_first_not_of("0123456789") != std::string::npos) {
    std::string err = r.err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    fail("sbatch failed (exit {}): {}: {}", r.exit_code, describe_command(argv), err.empty() ? r.out : err);
  }
  return id;
}

}  // namespace

std::string sbatch_header(const PipelineSpec& spec, const OutputLayout& layout, const Stage& stage, bool merge_job) {
  const auto& slurm = spec.slurm;
  std::vector<std::string> opts;
  opts.push_back(fmt::format("--job-name={}-{}{}", spec.name, stage.name, merge_job ? "-merge" : ""));
  const fs::path log = layout.logs_dir() / (merge_job          ? stage.name + ".merge.%j.log"
                                            : stage.is_array() ? stage.name + ".shard-%a.%A.log"
                                                               : stage.name + ".%j.log");
  opts.push_back("--output=" + log.string());
  // A requeued task appends to its log instead of truncating the first attempt's output.
  opts.push_back("--open-mode=append");
  opts.push_back("--chdir=" + spec.base_dir.string());
  opts.push_back("--nodes=1");
  opts.push_back("--ntasks=1");
  if (!slurm.partition.empty()) opts.push_back("--partition=" + slurm.partition);
  if (!slurm.account.empty()) opts.push_back("--account=" + slurm.account);
  if (!slurm.qos.empty()) opts.push_back("--qos=" + slurm.qos);
  const std::string time = !merge_job && !stage.resources.time.empty() ? stage.resources.time : slurm.time;
  if (!time.empty()) opts.push_back("--time=" + time);
  if (!merge_job) {
    opts.push_back(fmt::format("--cpus-per-task={}", stage.resources.cpus));
    if (!stage.resources.mem.empty()) opts.push_back("--mem=" + stage.resources.mem);
    if (stage.resources.gpus > 0) opts.push_back(fmt::format("--gres=gpu:{}", stage.resources.gpus));
  } else {
    opts.push_back("--cpus-per-task=1");
  }
  opts.push_back("--requeue");
  // A stage whose dependency failed is cancelled instead of pending forever.
  opts.push_back("--kill-on-invalid-dep=yes");
  for (const auto& a : slurm.sbatch_args) opts.push_back(a);
  std::string header;
  for (const auto& o : opts) header += "#SBATCH " + o + "\n";
  return header;
}

std::vector<std::string> recorded_job_ids(const OutputLayout& layout) {
  std::vector<std::string> ids;
  const auto state = load_state(layout);
  if (!state) return ids;
  for (const auto& [stage, jobs] : state->jobs) {
    if (!jobs.job_id.empty()) ids.push_back(jobs.job_id);
    if (!jobs.merge_job_id.empty()) ids.push_back(jobs.merge_job_id);
  }
  return ids;
}

int submit_slurm(const PipelineSpec& spec, const OutputLayout& layout, const fs::path& qed_bin,
                 const SlurmSubmitOptions& options, std::ostream& progress) {
  layout.create_dirs();
  const auto previous = load_state(layout);
  if (previous && !options.dry_run) {
    const JobStates live = query_queue(recorded_job_ids(layout));
    if (!live.empty()) {
      fail(
          "{}: jobs of an earlier submission are still queued or running ({}); wait for them or run "
          "`qed pipeline cancel {}` first",
          layout.root.string(), live.begin()->first, layout.root.string());
    }
  }
  save_spec_snapshot(layout, spec);
  PipelineState state{"slurm", spec.spec_path, {}};
  if (previous && previous->executor == "slurm") state.jobs = previous->jobs;  // history of finished stages
  if (!options.dry_run) save_state(layout, state);

  const ScriptContext ctx{spec, layout, qed_bin, ExecutorKind::kSlurm, ""};
  std::map<std::string, std::string> final_job;  // stage -> job its dependents wait for (this submission)
  std::vector<std::string> submitted;
  int fake_id = 0;  // dry run: stand-in ids so the printed dependencies read right
  auto sbatch = [&](std::vector<std::string> argv) {
    progress << "  " << describe_command(argv) << "\n";
    if (options.dry_run) return fmt::format("<job{}>", ++fake_id);
    try {
      const std::string id = submit(argv);
      submitted.push_back(id);
      return id;
    } catch (const Error&) {
      // Leave nothing half-submitted: jobs of this run that depend on each other go too.
      for (const auto& id : submitted) run_capture({"scancel", id});
      throw;
    }
  };

  for (const auto& name : topological_order(spec)) {
    const Stage& stage = spec.stage(name);
    if (stage_done(spec, layout, stage)) {
      progress << name << ": done earlier, not submitted\n";
      continue;
    }
    std::string deps;
    for (const auto& need : stage.needs) {
      if (final_job.count(need)) deps += ":" + final_job[need];
    }
    const std::string fingerprint = stage_fingerprint(spec, stage);
    std::vector<int> todo;
    for (int i = 0; i < stage.shards; ++i) {
      if (read_marker(layout.shard_marker(name, i), fingerprint) != MarkerState::kDone) todo.push_back(i);
    }

    StageJobs jobs;
    jobs.submitted_at = utc_now_iso();
    jobs.shards = todo;
    if (!stage.is_array() || !todo.empty()) {
      ScriptContext stage_ctx = ctx;
      stage_ctx.header = sbatch_header(spec, layout, stage, false);
      write_script(layout.stage_script(name), stage_script(stage_ctx, stage));
      std::vector<std::string> argv = {"sbatch", "--parsable"};
      if (!deps.empty()) argv.push_back("--dependency=afterok" + deps);
      if (stage.is_array()) argv.push_back(fmt::format("--array={}", array_list(todo)));
      argv.push_back(layout.stage_script(name).string());
      jobs.job_id = sbatch(argv);
      final_job[name] = jobs.job_id;
    }
    if (stage.is_array()) {
      ScriptContext merge_ctx = ctx;
      merge_ctx.header = sbatch_header(spec, layout, stage, true);
      write_script(layout.merge_script(name), merge_script(merge_ctx, stage));
      std::vector<std::string> argv = {"sbatch", "--parsable"};
      const std::string merge_deps = jobs.job_id.empty() ? deps : ":" + jobs.job_id;
      if (!merge_deps.empty()) argv.push_back("--dependency=afterok" + merge_deps);
      argv.push_back(layout.merge_script(name).string());
      jobs.merge_job_id = sbatch(argv);
      final_job[name] = jobs.merge_job_id;
    }
    progress << fmt::format("{}: submitted job {}{}{}\n", name, jobs.job_id.empty() ? "-" : jobs.job_id,
                            stage.is_array() ? fmt::format(" (shards {})", array_list(todo)) : "",
                            jobs.merge_job_id.empty() ? "" : ", merge job " + jobs.merge_job_id);
    state.jobs[name] = jobs;
    if (!options.dry_run) save_state(layout, state);
  }
  return static_cast<int>(options.dry_run ? fake_id : submitted.size());
}

int cancel_slurm(const OutputLayout& layout, std::ostream& progress) {
  const auto ids = recorded_job_ids(layout);
  const JobStates live = query_queue(ids);
  int cancelled = 0;
  for (const auto& id : ids) {
    bool active = false;
    for (const auto& [task, state] : live) active = active || task.substr(0, task.find('_')) == id;
    if (!active) continue;
    const auto r = run_capture({"scancel", id});
    if (r.exit_code != 0) fail("scancel {} failed: {}", id, r.err);
    progress << "cancelled job " << id << "\n";
    ++cancelled;
  }
  if (cancelled == 0) progress << "no queued or running jobs for " << layout.root.string() << "\n";
  return cancelled;
}

bool wait_slurm(const OutputLayout& layout, double timeout_s, double poll_s) {
  const auto ids = recorded_job_ids(layout);
  const auto start = std::chrono::steady_clock::now();
  while (!query_queue(ids).empty()) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (timeout_s > 0 && waited >= timeout_s) return false;
    std::this_thread::sleep_for(std::chrono::duration<double>(poll_s));
  }
  return true;
}

}  // namespace qed::pipeline
