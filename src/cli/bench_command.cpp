#include "cli/bench_command.h"

#include <fmt/core.h>

#include <fstream>

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

}  // namespace qed::cli
