// qed pipeline: run a workflow described in one YAML on this machine or on Slurm (see docs/pipeline.md).
#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "pipeline/local_executor.h"
#include "pipeline/merge.h"
#include "pipeline/slurm_executor.h"
#include "pipeline/spec.h"
#include "pipeline/state.h"
#include "pipeline/status.h"

namespace qed::cli {

namespace {

namespace fs = std::filesystem;
using namespace qed::pipeline;

struct RunFlags {
  std::string spec;
  std::string output;
  std::string executor;
  bool dry_run = false;
  bool wait = false;
  double wait_timeout_s = 0;
  double poll_s = 2;
};

// Stage scripts call this same binary (`qed ...` in commands, the merge jobs), by absolute path.
fs::path self_path() {
  return fs::read_symlink("/proc/self/exe");
}

void print_status(const OutputLayout& layout) {
  std::cout << pipeline_status(layout).to_table() << std::flush;
}

void run(const RunFlags& f) {
  PipelineSpec spec = load_spec(f.spec);
  if (!f.output.empty()) spec.output_dir = fs::absolute(f.output).lexically_normal();
  if (f.executor == "local") spec.executor = ExecutorKind::kLocal;
  if (f.executor == "slurm") spec.executor = ExecutorKind::kSlurm;
  const OutputLayout layout{spec.output_dir};
  std::cout << fmt::format("pipeline {} ({}): {} stages, output in {}\n", spec.name, executor_name(spec.executor),
                           spec.stages.size(), layout.root.string());

  if (spec.executor == ExecutorKind::kLocal) {
    if (f.dry_run) fail("--dry-run is for the slurm executor (it prints the sbatch commands)");
    const LocalRunResult r = run_local(spec, layout, self_path(), std::cout);
    std::cout << fmt::format("ran {}, skipped {} (done earlier), failed {}, not run {}\n", r.ran, r.skipped, r.failed,
                             r.blocked);
    if (!r.ok()) fail("pipeline {}: {} stage(s) failed; logs in {}", spec.name, r.failed, layout.logs_dir().string());
    return;
  }

  const int submitted = submit_slurm(spec, layout, self_path(), {f.dry_run}, std::cout);
  std::cout << fmt::format("{} {} job(s); follow with `qed pipeline status {}`\n",
                           f.dry_run ? "would submit" : "submitted", submitted, layout.root.string());
  if (!f.wait || f.dry_run) return;
  if (!wait_slurm(layout, f.wait_timeout_s, f.poll_s)) {
    print_status(layout);
    fail("pipeline {}: jobs still queued after {}s", spec.name, f.wait_timeout_s);
  }
  const PipelineStatus status = pipeline_status(layout);
  std::cout << status.to_table();
  if (!status.all_done()) fail("pipeline {}: not every stage finished; see {}", spec.name, layout.logs_dir().string());
}

}  // namespace

void register_pipeline(CLI::App& app) {
  auto* cmd = app.add_subcommand("pipeline", "Run a workflow from one YAML, locally or on Slurm");
  cmd->require_subcommand(1);

  auto flags = std::make_shared<RunFlags>();
  auto* run_cmd = cmd->add_subcommand("run", "Run (or resume) a pipeline: finished stages are skipped");
  run_cmd->add_option("spec", flags->spec, "Pipeline YAML")->required()->check(CLI::ExistingFile);
  run_cmd->add_option("-o,--output", flags->output, "Output dir (default: output_dir from the YAML)");
  run_cmd->add_option("--executor", flags->executor, "Override the YAML's executor")
      ->check(CLI::IsMember({"local", "slurm"}));
  run_cmd->add_flag("--dry-run", flags->dry_run, "Slurm: write the sbatch scripts and print commands only");
  run_cmd->add_flag("--wait", flags->wait, "Slurm: wait until the jobs leave the queue, then print status");
  run_cmd->add_option("--wait-timeout", flags->wait_timeout_s, "Slurm: give up waiting after this many seconds");
  run_cmd->add_option("--poll", flags->poll_s, "Slurm: seconds between queue polls while waiting")
      ->check(CLI::PositiveNumber);
  run_cmd->callback([flags] { run(*flags); });

  auto spec_path = std::make_shared<std::string>();
  auto* validate = cmd->add_subcommand("validate", "Check a pipeline YAML and print the stage order");
  validate->add_option("spec", *spec_path, "Pipeline YAML")->required()->check(CLI::ExistingFile);
  validate->callback([spec_path] {
    const PipelineSpec spec = load_spec(*spec_path);
    std::cout << fmt::format("{}: ok, executor {}, {} stages\n", *spec_path, executor_name(spec.executor),
                             spec.stages.size());
    for (const auto& name : topological_order(spec)) {
      const Stage& s = spec.stage(name);
      std::string needs;
      for (const auto& n : s.needs) needs += (needs.empty() ? " (after " : ", ") + n;
      std::cout << "  " << name << (s.is_array() ? fmt::format(" [{} shards]", s.shards) : "")
                << (needs.empty() ? "" : needs + ")") << "\n";
    }
  });

  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* status = cmd->add_subcommand("status", "Show the state of each stage of the pipeline in DIR");
  status->add_option("dir", *dir, "Pipeline output dir")->required();
  status->add_flag("--json", *json, "Print JSON instead of a table");
  status->callback([dir, json] {
    const PipelineStatus s = pipeline_status(OutputLayout{fs::absolute(*dir).lexically_normal()});
    std::cout << (*json ? s.to_json().dump(2) + "\n" : s.to_table());
  });

  auto* cancel = cmd->add_subcommand("cancel", "Cancel the queued and running Slurm jobs of the pipeline in DIR");
  cancel->add_option("dir", *dir, "Pipeline output dir")->required();
  cancel->callback([dir] { cancel_slurm(OutputLayout{fs::absolute(*dir).lexically_normal()}, std::cout); });

  auto stage = std::make_shared<std::string>();
  auto* merge = cmd->add_subcommand("merge-stage", "Merge an array stage's shard outputs (run by Slurm merge jobs)");
  merge->add_option("dir", *dir, "Pipeline output dir")->required();
  merge->add_option("stage", *stage, "Array stage")->required();
  merge->callback([dir, stage] {
    const OutputLayout layout{fs::absolute(*dir).lexically_normal()};
    const PipelineSpec spec = load_spec_snapshot(layout);
    const Stage& s = spec.stage(*stage);
    const MergeStats m = merge_array_stage(spec, layout, s);
    std::cout << fmt::format(
        "{}: merged {} rows from {} shards into {} ({} duplicates dropped, {} truncated rows "
        "dropped, {} shards without output)\n",
        s.name, m.rows, s.shards, layout.output(s).string(), m.duplicates, m.truncated, m.missing_shards);
  });
}

}  // namespace qed::cli
