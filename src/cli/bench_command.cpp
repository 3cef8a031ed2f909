#include "cli/bench_command.h"

#include <fmt/core.h>

#include <fstream>

#include "cli/version.h"
#include "core/error.h"

namespace qed::cli {

CLI::App* bench_command(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->get_name() == "bench") return sub;
  }
  auto* bench = app.add_subcommand("bench", "Benchmarks (results as bench JSON with provenance)");
  bench->require_subcommand(1);
  return bench;
}

void write_bench_json(const std::string& path, const nlohmann::json& document) {
  std::ofstream file(path);
  if (!file) fail("{}: cannot write", path);
  file << document.dump(1) << "\n";
  if (!file) fail("{}: write failed", path);
  fmt::print("wrote {}\n", path);
}

std::string build_git_sha() {
  const std::string version = kVersion;  // "0.1.0 (sha)"
  const size_t open = version.find('('), close = version.find(')');
  return open != std::string::npos && close > open ? version.substr(open + 1, close - open - 1) : version;
}

}  // namespace qed::cli
