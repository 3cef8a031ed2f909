#include "pipeline/local_executor.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <sstream>

#include "pipeline/state.h"
#include "pipeline/status.h"
#include "temp_dir.h"

namespace qed::pipeline {
namespace {

using testing::read_file;
using testing::TempDir;

// Stage scripts only put the binary's directory on PATH; these tests run plain shell stages.
const std::filesystem::path kQedBin = "/bin/true";

struct Run {
  LocalRunResult result;
  std::string progress;
};

Run run(const TempDir& dir, const std::string& yaml) {
  const auto spec = load_spec(dir.write("spec.yaml", yaml));
  std::ostringstream progress;
  Run r{run_local(spec, OutputLayout{spec.output_dir}, kQedBin, progress), ""};
  r.progress = progress.str();
  return r;
}

TEST(LocalExecutor, RunsStagesInDependencyOrder) {
  TempDir dir;
  const auto r = run(dir, R"Y(
output_dir: out
stages:
  report: {command: echo report >> order.txt, needs: [eval]}
  gen: {command: echo gen >> order.txt}
  eval: {command: echo eval >> order.txt, needs: gen}
)Y");
  EXPECT_TRUE(r.result.ok()) << r.progress;
  EXPECT_EQ(r.result.ran, 3);
  EXPECT_EQ(read_file(dir / "order.txt"), "gen\neval\nreport\n");
  EXPECT_NE(read_file(dir / "out/logs/gen.log").find("gen shard 0 done"), std::string::npos);
}

TEST(LocalExecutor, StageSeesPipelineEnvironment) {
  TempDir dir;
  dir.write("problems.jsonl", "{}\n");
  const auto r = run(dir, R"Y(
output_dir: out
data: {problems: problems.jsonl}
env: {GREETING: hello}
stages:
  a:
    command: 'echo "$GREETING $QED_STAGE $QED_SHARD/$QED_NUM_SHARDS $QED_DATA_PROBLEMS $PWD" > "$QED_OUTPUT"'
    output: env/a.txt
    env: {GREETING: hi}
)Y");
  ASSERT_TRUE(r.result.ok()) << r.progress;
  EXPECT_EQ(read_file(dir / "out/env/a.txt"),
            "hi a 0/1 " + (dir / "problems.jsonl").string() + " " + dir.path().string() + "\n");
}

TEST(LocalExecutor, FinishedStagesAreSkippedOnRerun) {
  TempDir dir;
  const std::string yaml = "output_dir: out\nstages:\n  a: {command: echo x >> runs.txt}\n";
  EXPECT_EQ(run(dir, yaml).result.ran, 1);
  const auto again = run(dir, yaml);
  EXPECT_EQ(again.result.ran, 0);
  EXPECT_EQ(again.result.skipped, 1);
  EXPECT_EQ(read_file(dir / "runs.txt"), "x\n");
}

TEST(LocalExecutor, EditedStageRunsAgain) {
  TempDir dir;
  run(dir, "output_dir: out\nstages:\n  a: {command: echo one >> runs.txt}\n");
  EXPECT_EQ(run(dir, "output_dir: out\nstages:\n  a: {command: echo two >> runs.txt}\n").result.ran, 1);
  EXPECT_EQ(read_file(dir / "runs.txt"), "one\ntwo\n");
}

TEST(LocalExecutor, FailedStageBlocksDependentsAndRerunsOnResume) {
  TempDir dir;
  const std::string yaml = R"Y(
output_dir: out
stages:
  prep: {command: echo prep >> runs.txt}
  flaky: {command: 'echo flaky >> runs.txt; test -f fixed', needs: prep}
  after: {command: echo after >> runs.txt, needs: flaky}
  independent: {command: echo independent >> runs.txt}
)Y";
  const auto first = run(dir, yaml);
  EXPECT_EQ(first.result.failed, 1);
  EXPECT_EQ(first.result.blocked, 1);
  EXPECT_EQ(read_file(dir / "runs.txt"), "prep\nflaky\nindependent\n");
  EXPECT_EQ(read_file(dir / "out/.pipeline/status/flaky.failed"), "1\n");

  const auto status = pipeline_status(OutputLayout{dir / "out"});
  ASSERT_EQ(status.stages.size(), 4u);
  EXPECT_EQ(status.stages[1].stage, "flaky");
  EXPECT_EQ(status.stages[1].state, "failed");
  EXPECT_EQ(status.stages[2].state, "not started");
  EXPECT_FALSE(status.all_done());

  dir.write("fixed", "");
  const auto second = run(dir, yaml);
  EXPECT_TRUE(second.result.ok()) << second.progress;
  EXPECT_EQ(second.result.skipped, 2);
  EXPECT_EQ(read_file(dir / "runs.txt"), "prep\nflaky\nindependent\nflaky\nafter\n");
  EXPECT_TRUE(pipeline_status(OutputLayout{dir / "out"}).all_done());
}

TEST(LocalExecutor, ArrayShardsWriteTheirOwnOutputsMergedByKey) {
  TempDir dir;
  // Each shard writes rows i*10..i*10+2; shard 1 also repeats shard 0's first row, as a resumed shard might.
  const auto r = run(dir, R"Y(
output_dir: out
stages:
  gen:
    command: |
      for k in 0 1 2; do echo "{\"id\": $((QED_SHARD * 10 + k)), \"of\": $QED_NUM_SHARDS}" >> "$QED_OUTPUT"; done
      if [ "$QED_SHARD" = 1 ]; then echo '{"id": 0, "of": 3}' >> "$QED_OUTPUT"; fi
    array: 3
    output: gen.jsonl
)Y");
  ASSERT_TRUE(r.result.ok()) << r.progress;
  EXPECT_NE(r.progress.find("merged 9 rows"), std::string::npos) << r.progress;
  EXPECT_NE(r.progress.find("1 duplicates dropped"), std::string::npos) << r.progress;
  const std::string merged = read_file(dir / "out/gen.jsonl");
  EXPECT_EQ(std::count(merged.begin(), merged.end(), '\n'), 9);
  EXPECT_EQ(merged.substr(0, merged.find('\n')), "{\"id\": 0, \"of\": 3}");
  EXPECT_TRUE(std::filesystem::exists(dir / "out/shards/gen/gen.shard-2-of-3.jsonl"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out/logs/gen.shard-2.log"));
}

TEST(LocalExecutor, OnlyFailedShardsRerunOnResume) {
  TempDir dir;
  const std::string yaml = R"Y(
output_dir: out
stages:
  gen:
    command: |
      echo "$QED_SHARD" >> runs.txt
      if [ "$QED_SHARD" = 1 ] && [ ! -f fixed ]; then exit 3; fi
      echo "{\"id\": $QED_SHARD}" > "$QED_OUTPUT"
    array: 3
    output: gen.jsonl
)Y";
  const auto first = run(dir, yaml);
  EXPECT_EQ(first.result.failed, 1);
  EXPECT_EQ(read_file(dir / "out/.pipeline/status/gen.shard-1.failed"), "3\n");
  EXPECT_FALSE(std::filesystem::exists(dir / "out/gen.jsonl"));
  const auto status = pipeline_status(OutputLayout{dir / "out"});
  EXPECT_EQ(status.stages[0].state, "failed");
  EXPECT_EQ(status.stages[0].shards_done, 2);

  dir.write("fixed", "");
  EXPECT_TRUE(run(dir, yaml).result.ok());
  EXPECT_EQ(read_file(dir / "runs.txt"), "0\n1\n2\n1\n");
  EXPECT_EQ(read_file(dir / "out/gen.jsonl"), "{\"id\": 0}\n{\"id\": 1}\n{\"id\": 2}\n");
}

TEST(LocalExecutor, ServiceIsUpDuringTheStageAndStoppedAfter) {
  TempDir dir;
  const auto r = run(dir, R"Y(
output_dir: out
services:
  fake_server:
    command: 'echo $$ > server.pid; sleep 0.3; touch server.ready; exec sleep 300'
    health: {command: test -f server.ready}
    startup_timeout: 20
stages:
  client:
    command: 'kill -0 "$(cat server.pid)" && echo server-was-up > client.txt'
    services: [fake_server]
)Y");
  ASSERT_TRUE(r.result.ok()) << r.progress << read_file(dir / "out/logs/client.log");
  EXPECT_EQ(read_file(dir / "client.txt"), "server-was-up\n");
  const pid_t server = std::stoi(read_file(dir / "server.pid"));
  EXPECT_NE(kill(server, 0), 0) << "service still running after its stage";
  EXPECT_NE(read_file(dir / "out/logs/client.log").find("service 'fake_server' healthy"), std::string::npos);
}

TEST(LocalExecutor, HttpHealthCheckOnAnAutoPort) {
  TempDir dir;
  const auto r = run(dir, R"Y(
output_dir: out
services:
  web:
    command: exec python3 -m http.server --bind 127.0.0.1 "$QED_SERVICE_WEB_PORT"
    port: auto
    health: {http: /}
    startup_timeout: 30
stages:
  client:
    command: 'echo "$QED_SERVICE_WEB_URL" > url.txt'
    services: [web]
)Y");
  ASSERT_TRUE(r.result.ok()) << r.progress << read_file(dir / "out/logs/client.log");
  EXPECT_EQ(read_file(dir / "url.txt").rfind("http://127.0.0.1:", 0), 0u);
}

TEST(LocalExecutor, ServiceThatNeverGetsHealthyFailsTheStage) {
  TempDir dir;
  const auto r = run(dir, R"Y(
output_dir: out
services:
  broken: {command: 'echo starting; exit 7', health: {command: 'false'}}
stages:
  client: {command: touch ran.txt, services: [broken]}
)Y");
  EXPECT_EQ(r.result.failed, 1);
  EXPECT_FALSE(std::filesystem::exists(dir / "ran.txt"));
  EXPECT_NE(read_file(dir / "out/logs/client.log").find("service 'broken' exited before it became healthy"),
            std::string::npos);
}

TEST(LocalExecutor, SetupLineFailureFailsTheStage) {
  TempDir dir;
  const auto r = run(dir, "output_dir: out\nsetup: ['false']\nstages:\n  a: {command: touch ran.txt}\n");
  EXPECT_EQ(r.result.failed, 1);
  EXPECT_FALSE(std::filesystem::exists(dir / "ran.txt"));
}

TEST(LocalExecutor, ArgsArePassedQuoted) {
  TempDir dir;
  const auto r =
      run(dir, "output_dir: out\nstages:\n  a: {command: printf '%s|' , args: [\"a b\", \"it's\", \"$HOME\"]}\n");
  ASSERT_TRUE(r.result.ok());
  EXPECT_NE(read_file(dir / "out/logs/a.log").find("a b|it's|$HOME|"), std::string::npos);
}

}  // namespace
}  // namespace qed::pipeline
