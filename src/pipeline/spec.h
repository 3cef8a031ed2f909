#pragma once
// A pipeline spec: the YAML a user writes (`qed pipeline run spec.yaml`), parsed and validated into plain structs.
// Both executors read only this; nothing here knows how stages are launched.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace qed::pipeline {

// Where a node sat in the YAML, so errors can say `spec.yaml:12:5: ...` (1-based, as editors count).
struct SourceLocation {
  int line = 0;
  int column = 0;
};

struct Resources {
  int gpus = 0;
  int cpus = 1;
  std::string mem;   // Slurm syntax ("8G", "500M"); empty = partition default
  std::string time;  // Slurm syntax ("01:00:00"); empty = slurm.time or partition default
};

// A background process a stage needs (model server, sandbox): started before the stage's command, polled until
// healthy, stopped when the command ends, in the same allocation on Slurm.
struct Service {
  // Picked at run time among free ports, so two shards of an array on one node don't collide.
  static constexpr int kAutoPort = -1;
  std::string name;
  std::string command;
  int port = 0;                // 0: none; exported as QED_SERVICE_<NAME>_PORT
  std::string health_http;     // URL that must answer HTTP 200 (http://host:port/health), or a path (/health)
                               // on 127.0.0.1 at the service's port
  std::string health_command;  // or a shell command that must exit 0
  double startup_timeout_s = 120;
  SourceLocation location;
};

struct Stage {
  std::string name;
  std::string command;            // shell command line, run by bash in the spec's directory
  std::vector<std::string> args;  // appended to command, each shell-quoted
  std::vector<std::string> needs;
  Resources resources;
  int shards = 0;                // > 0: array stage; each shard gets QED_SHARD / QED_NUM_SHARDS and its own output
  std::string output;            // file under the output dir the stage writes (QED_OUTPUT); for arrays the merged file
  std::string merge_key = "id";  // array stages: rows with the same value of this field are kept once
  std::vector<std::string> services;
  std::map<std::string, std::string> env;
  SourceLocation location;

  bool is_array() const { return shards > 0; }
  int num_tasks() const { return is_array() ? shards : 1; }
};

struct SlurmConfig {
  std::string partition;
  std::string account;
  std::string qos;
  std::string time;                      // default time limit for stages without resources.time
  std::string container;                 // pyxis/enroot image: commands run via srun --container-image
  std::vector<std::string> mounts;       // pyxis --container-mounts entries
  std::vector<std::string> setup;        // shell lines run at the start of every job (module load, venv, ...)
  std::vector<std::string> sbatch_args;  // extra sbatch options, passed through verbatim
};

enum class ExecutorKind { kLocal, kSlurm };

struct PipelineSpec {
  std::filesystem::path spec_path;  // absolute
  std::filesystem::path base_dir;   // the spec's directory: relative paths and stage commands start here
  std::string name;
  ExecutorKind executor = ExecutorKind::kLocal;
  std::filesystem::path output_dir;                   // absolute
  std::map<std::string, std::filesystem::path> data;  // named inputs, absolute; exported as QED_DATA_<NAME>
  std::map<std::string, std::string> env;
  std::vector<std::string> setup;  // shell lines run before every stage, on any executor
  SlurmConfig slurm;
  std::map<std::string, Service> services;
  std::vector<Stage> stages;  // in file order

  const Stage& stage(const std::string& stage_name) const;
};

// Parses and validates; throws qed::Error naming `file:line:column` for anything wrong (unknown keys, bad types,
// missing/cyclic dependencies, unknown services).
PipelineSpec load_spec(const std::filesystem::path& path);
PipelineSpec parse_spec(const std::string& yaml_text, const std::filesystem::path& path);

// Stages ordered so each comes after everything it needs (ties keep file order).
std::vector<std::string> topological_order(const PipelineSpec& spec);

const char* executor_name(ExecutorKind kind);

}  // namespace qed::pipeline
