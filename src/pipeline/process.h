#pragma once
// Running child processes without a shell in between: sbatch/squeue/sacct/scancel (captured) and stage scripts
// (output appended to a log file).
#include <filesystem>
#include <string>
#include <vector>

namespace qed::pipeline {

struct CommandResult {
  int exit_code = 0;  // 128 + signal when killed by one; 127 when the program could not be started
  std::string out;
  std::string err;
};

CommandResult run_capture(const std::vector<std::string>& argv);

// Runs argv with stdout and stderr appended to `log`; returns the exit code as above.
int run_to_log(const std::vector<std::string>& argv, const std::filesystem::path& log);

// "prog a 'b c'": for error messages and --dry-run listings.
std::string describe_command(const std::vector<std::string>& argv);

}  // namespace qed::pipeline
