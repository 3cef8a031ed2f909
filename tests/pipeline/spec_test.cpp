#include "pipeline/spec.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "temp_dir.h"

namespace qed::pipeline {
namespace {

using testing::TempDir;

// The message parse_spec throws for `yaml`, or "" when it parses.
std::string error_of(const std::string& yaml) {
  try {
    parse_spec(yaml, "/work/p/spec.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(PipelineSpec, ParsesEveryField) {
  const auto spec = parse_spec(R"(
name: math-eval
executor: slurm
output_dir: results
data:
  problems: data/problems.jsonl
env: {OMP_NUM_THREADS: "4"}
setup: ["echo hello"]
slurm:
  partition: batch
  account: research
  qos: normal
  time: "02:00:00"
  container: nvcr.io/nvidia/pytorch:24.01
  mounts: [/data:/data]
  setup: [module load cuda]
  sbatch_args: [--exclusive]
services:
  server:
    command: qed serve --port $QED_SERVICE_SERVER_PORT
    port: auto
    health: {http: /health}
    startup_timeout: 300
stages:
  tokenize:
    command: qed tokenize
    args: [--text, "a b"]
  generate:
    command: qed batch
    needs: tokenize
    resources: {gpus: 1, cpus: 8, mem: 64G, time: "04:00:00"}
    array: {shards: 4, merge_key: problem_id}
    output: generations.jsonl
    services: [server]
    env: {SEED: "7"}
)",
                               "/work/p/spec.yaml");
  EXPECT_EQ(spec.name, "math-eval");
  EXPECT_EQ(spec.executor, ExecutorKind::kSlurm);
  EXPECT_EQ(spec.base_dir, "/work/p");
  EXPECT_EQ(spec.output_dir, "/work/p/results");
  EXPECT_EQ(spec.data.at("problems"), "/work/p/data/problems.jsonl");
  EXPECT_EQ(spec.env.at("OMP_NUM_THREADS"), "4");
  EXPECT_EQ(spec.slurm.partition, "batch");
  EXPECT_EQ(spec.slurm.account, "research");
  EXPECT_EQ(spec.slurm.qos, "normal");
  EXPECT_EQ(spec.slurm.time, "02:00:00");
  EXPECT_EQ(spec.slurm.container, "nvcr.io/nvidia/pytorch:24.01");
  EXPECT_EQ(spec.slurm.setup, std::vector<std::string>{"module load cuda"});
  EXPECT_EQ(spec.services.at("server").port, Service::kAutoPort);
  EXPECT_EQ(spec.services.at("server").health_http, "/health");
  EXPECT_EQ(spec.services.at("server").startup_timeout_s, 300);
  const Stage& gen = spec.stage("generate");
  EXPECT_EQ(gen.needs, std::vector<std::string>{"tokenize"});
  EXPECT_EQ(gen.resources.gpus, 1);
  EXPECT_EQ(gen.resources.cpus, 8);
  EXPECT_EQ(gen.resources.mem, "64G");
  EXPECT_EQ(gen.resources.time, "04:00:00");
  EXPECT_EQ(gen.shards, 4);
  EXPECT_EQ(gen.merge_key, "problem_id");
  EXPECT_EQ(gen.output, "generations.jsonl");
  EXPECT_EQ(gen.services, std::vector<std::string>{"server"});
  EXPECT_EQ(spec.stage("tokenize").args, (std::vector<std::string>{"--text", "a b"}));
  EXPECT_FALSE(spec.stage("tokenize").is_array());
}

TEST(PipelineSpec, DefaultsToLocalExecutorAndOutputDirBesideTheSpec) {
  const auto spec = parse_spec("stages:\n  a:\n    command: true\n", "/x/y/demo.yaml");
  EXPECT_EQ(spec.executor, ExecutorKind::kLocal);
  EXPECT_EQ(spec.name, "demo");
  EXPECT_EQ(spec.output_dir, "/x/y/demo-out");
}

TEST(PipelineSpec, UnknownStageKeyIsReportedAtItsLineAndColumn) {
  const std::string e = error_of("stages:\n  a:\n    comand: echo\n");
  EXPECT_NE(e.find("/work/p/spec.yaml:3:5:"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'comand'"), std::string::npos) << e;
  EXPECT_NE(e.find("command"), std::string::npos) << e;
}

TEST(PipelineSpec, UnknownTopLevelKeyIsRejected) {
  EXPECT_NE(error_of("executer: slurm\nstages:\n  a: {command: x}\n").find("spec.yaml:1:1: pipeline: unknown key"),
            std::string::npos);
}

TEST(PipelineSpec, KeyGivenTwiceIsRejected) {
  EXPECT_NE(error_of("stages:\n  a:\n    command: x\n    command: y\n").find("spec.yaml:4:5:"), std::string::npos);
}

TEST(PipelineSpec, MissingDependencyNamesStageAndPosition) {
  const std::string e = error_of("stages:\n  a: {command: x}\n  b:\n    command: y\n    needs: [a, c]\n");
  EXPECT_NE(e.find("spec.yaml:5:16: stage 'b' needs 'c', which is not a stage"), std::string::npos) << e;
}

TEST(PipelineSpec, DependencyCycleIsReportedWithItsPath) {
  const std::string e =
      error_of("stages:\n  a: {command: x, needs: c}\n  b: {command: x, needs: a}\n  c: {command: x, needs: b}\n");
  EXPECT_NE(e.find("dependency cycle: a -> c -> b -> a"), std::string::npos) << e;
}

TEST(PipelineSpec, StageNeedingItselfIsRejected) {
  EXPECT_NE(error_of("stages:\n  a: {command: x, needs: a}\n").find("needs itself"), std::string::npos);
}

TEST(PipelineSpec, UndefinedServiceIsRejected) {
  const std::string e = error_of("stages:\n  a: {command: x, services: [sandbox]}\n");
  EXPECT_NE(e.find("uses service 'sandbox', which is not defined"), std::string::npos) << e;
}

TEST(PipelineSpec, ServiceNeedsExactlyOneHealthCheck) {
  EXPECT_NE(error_of("services:\n  s: {command: x}\nstages:\n  a: {command: x}\n").find("missing 'health'"),
            std::string::npos);
  EXPECT_NE(error_of("services:\n  s: {command: x, health: {http: 'http://h/', command: y}}\n"
                     "stages:\n  a: {command: x}\n")
                .find("exactly one"),
            std::string::npos);
  EXPECT_NE(error_of("services:\n  s: {command: x, health: {http: /health}}\nstages:\n  a: {command: x}\n")
                .find("needs a 'port'"),
            std::string::npos);
}

TEST(PipelineSpec, ArrayStageNeedsAnOutputToMergeInto) {
  EXPECT_NE(error_of("stages:\n  a: {command: x, array: 3}\n").find("an array stage needs 'output'"),
            std::string::npos);
}

TEST(PipelineSpec, BadValuesAreRejectedWithTheField) {
  EXPECT_NE(error_of("executor: k8s\nstages:\n  a: {command: x}\n").find("spec.yaml:1:11: executor must be"),
            std::string::npos);
  EXPECT_NE(error_of("stages:\n  a: {command: x, array: 0, output: o}\n").find("array must be >= 1"),
            std::string::npos);
  EXPECT_NE(error_of("stages:\n  a: {command: x, resources: {gpus: two}}\n").find("gpus must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of("stages:\n  a: {command: x, resources: {mem: 8GB}}\n").find("mem must be a size"),
            std::string::npos);
  EXPECT_NE(error_of("stages:\n  a: {command: x, resources: {time: soon}}\n").find("must be a Slurm time"),
            std::string::npos);
  EXPECT_NE(error_of("stages:\n  a: {command: x, output: ../escape.jsonl}\n").find("inside the output dir"),
            std::string::npos);
  EXPECT_NE(error_of("stages:\n  'a b': {command: x}\n").find("may only contain"), std::string::npos);
}

TEST(PipelineSpec, InvalidYamlReportsPosition) {
  const std::string e = error_of("stages:\n  a: {command: x\n");
  EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
  EXPECT_NE(e.find("spec.yaml:"), std::string::npos) << e;
}

TEST(PipelineSpec, EmptyOrMissingStagesAreRejected) {
  EXPECT_NE(error_of("name: x\n").find("missing 'stages'"), std::string::npos);
  EXPECT_NE(error_of("stages: {}\n").find("non-empty"), std::string::npos);
}

TEST(PipelineSpec, TopologicalOrderPutsNeedsFirstAndKeepsFileOrderOtherwise) {
  const auto spec = parse_spec(
      "stages:\n  report: {command: x, needs: [eval]}\n  prep: {command: x}\n  eval: {command: x, needs: gen}\n"
      "  gen: {command: x, needs: prep}\n  lint: {command: x}\n",
      "/p/s.yaml");
  EXPECT_EQ(topological_order(spec), (std::vector<std::string>{"prep", "gen", "eval", "report", "lint"}));
}

TEST(PipelineSpec, LoadSpecNamesAMissingFile) {
  TempDir dir;
  try {
    load_spec(dir / "nope.yaml");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.yaml: cannot open"), std::string::npos);
  }
}

}  // namespace
}  // namespace qed::pipeline
