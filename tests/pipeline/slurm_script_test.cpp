// What the Slurm executor generates, checked without a cluster (tests/python/pipeline runs it on a real one).
#include <gtest/gtest.h>

#include <sstream>

#include "pipeline/slurm_executor.h"
#include "pipeline/slurm_query.h"
#include "pipeline/stage_script.h"
#include "temp_dir.h"

namespace qed::pipeline {
namespace {

using testing::read_file;
using testing::TempDir;

const char* kSpec = R"(
name: demo
executor: slurm
output_dir: out
slurm:
  partition: gpu
  account: team
  qos: high
  time: "01:00:00"
  container: nvcr.io/x:1
  setup: [module load cuda]
  sbatch_args: [--exclusive]
stages:
  prep: {command: echo prep}
  gen:
    command: echo gen
    needs: prep
    array: 4
    output: gen.jsonl
    resources: {gpus: 2, cpus: 8, mem: 32G, time: "03:00:00"}
  score: {command: echo score, needs: gen}
)";

TEST(SlurmExecutor, HeaderCarriesResourcesAndClusterSettings) {
  TempDir dir;
  const auto spec = load_spec(dir.write("spec.yaml", kSpec));
  const OutputLayout layout{spec.output_dir};
  const std::string h = sbatch_header(spec, layout, spec.stage("gen"), false);
  for (const char* want : {"#SBATCH --job-name=demo-gen\n", "#SBATCH --partition=gpu\n", "#SBATCH --account=team\n",
                           "#SBATCH --qos=high\n", "#SBATCH --time=03:00:00\n", "#SBATCH --cpus-per-task=8\n",
                           "#SBATCH --mem=32G\n", "#SBATCH --gres=gpu:2\n", "#SBATCH --requeue\n",
                           "#SBATCH --kill-on-invalid-dep=yes\n", "#SBATCH --exclusive\n", "gen.shard-%a.%A.log"}) {
    EXPECT_NE(h.find(want), std::string::npos) << want << "\n" << h;
  }
  const std::string prep = sbatch_header(spec, layout, spec.stage("prep"), false);
  EXPECT_NE(prep.find("#SBATCH --time=01:00:00\n"), std::string::npos) << "slurm.time is the default";
  EXPECT_EQ(prep.find("--gres"), std::string::npos);
}

TEST(SlurmExecutor, StageScriptRunsSetupAndCommandInTheContainer) {
  TempDir dir;
  const auto spec = load_spec(dir.write("spec.yaml", kSpec));
  const OutputLayout layout{spec.output_dir};
  const std::string s =
      stage_script({spec, layout, "/opt/qed/bin/qed", ExecutorKind::kSlurm, "#SBATCH --x\n"}, spec.stage("gen"));
  EXPECT_EQ(s.rfind("#!/usr/bin/env bash\n#SBATCH --x\n", 0), 0u);
  EXPECT_NE(s.find("module load cuda || qed_mark_failed $?"), std::string::npos);
  EXPECT_NE(s.find("srun --ntasks=1 --container-image='nvcr.io/x:1'"), std::string::npos);
  EXPECT_NE(s.find("QED_SHARD=${1:-${SLURM_ARRAY_TASK_ID:-0}}"), std::string::npos);
  EXPECT_NE(s.find("export PATH='/opt/qed/bin':"), std::string::npos);
  const std::string local =
      stage_script({spec, layout, "/opt/qed/bin/qed", ExecutorKind::kLocal, ""}, spec.stage("gen"));
  EXPECT_EQ(local.find("module load cuda"), std::string::npos) << "slurm.setup is for Slurm jobs only";
  EXPECT_EQ(local.find("srun"), std::string::npos);
}

TEST(SlurmExecutor, DryRunChainsDependenciesThroughTheMergeJob) {
  TempDir dir;
  const auto spec = load_spec(dir.write("spec.yaml", kSpec));
  const OutputLayout layout{spec.output_dir};
  std::ostringstream out;
  EXPECT_EQ(submit_slurm(spec, layout, "/opt/qed/bin/qed", {/*dry_run=*/true}, out), 4);
  const std::string p = out.str();
  EXPECT_NE(p.find("sbatch --parsable " + layout.stage_script("prep").string()), std::string::npos) << p;
  EXPECT_NE(
      p.find("sbatch --parsable '--dependency=afterok:<job1>' --array=0,1,2,3 " + layout.stage_script("gen").string()),
      std::string::npos)
      << p;
  EXPECT_NE(p.find("sbatch --parsable '--dependency=afterok:<job2>' " + layout.merge_script("gen").string()),
            std::string::npos)
      << p;
  EXPECT_NE(p.find("sbatch --parsable '--dependency=afterok:<job3>' " + layout.stage_script("score").string()),
            std::string::npos)
      << p;
  EXPECT_NE(read_file(layout.merge_script("gen")).find("pipeline merge-stage"), std::string::npos);
}

TEST(SlurmExecutor, ResubmissionSkipsDoneStagesAndDoneShards) {
  TempDir dir;
  const auto spec = load_spec(dir.write("spec.yaml", kSpec));
  const OutputLayout layout{spec.output_dir};
  layout.create_dirs();
  const auto fp = [&](const char* s) { return stage_fingerprint(spec, spec.stage(s)); };
  std::ofstream(layout.marker("prep").string() + ".done") << fp("prep") << "\n";
  std::ofstream(layout.shard_marker("gen", 0).string() + ".done") << fp("gen") << "\n";
  std::ofstream(layout.shard_marker("gen", 2).string() + ".done") << fp("gen") << "\n";
  std::ostringstream out;
  EXPECT_EQ(submit_slurm(spec, layout, "/opt/qed/bin/qed", {true}, out), 3);
  const std::string p = out.str();
  EXPECT_NE(p.find("prep: done earlier, not submitted"), std::string::npos) << p;
  EXPECT_NE(p.find("sbatch --parsable --array=1,3 "), std::string::npos) << p;
}

TEST(SlurmQuery, TaskStateFindsArrayTasksAndPendingRanges) {
  const JobStates states = {{"41", "COMPLETED"}, {"42_0", "RUNNING"}, {"42_[1-2,5%2]", "PENDING"}};
  EXPECT_EQ(task_state(states, "41", -1), "COMPLETED");
  EXPECT_EQ(task_state(states, "42", 0), "RUNNING");
  EXPECT_EQ(task_state(states, "42", 2), "PENDING");
  EXPECT_EQ(task_state(states, "42", 5), "PENDING");
  EXPECT_EQ(task_state(states, "42", 4), "");
  EXPECT_EQ(task_state(states, "", 0), "");
}

}  // namespace
}  // namespace qed::pipeline
