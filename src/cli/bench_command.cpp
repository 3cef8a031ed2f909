#include "cli/bench_command.h"

#include <fmt/core.h>

#include <ctime>
#include <fstream>
#include <iterator>
#include <utility>

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

std::string utc_now_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

namespace {
std::string this_command_line() {
  std::ifstream file("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  for (char& c : raw) {
    if (c == '\0') c = ' ';
  }
  while (!raw.empty() && raw.back() == ' ') raw.pop_back();
  return raw;
}
}  // namespace

nlohmann::json bench_provenance(nlohmann::json device, nlohmann::json driver, nlohmann::json cuda) {
  return {{"git_sha", build_git_sha()}, {"device", std::move(device)}, {"driver", std::move(driver)},
          {"cuda", std::move(cuda)},    {"date", utc_now_iso()},       {"command", this_command_line()}};
}

std::string build_git_sha() {
  const std::string version = kVersion;  // "0.1.0 (sha)"
  const size_t open = version.find('('), close = version.find(')');
  return open != std::string::npos && close > open ? version.substr(open + 1, close - open - 1) : version;
}

}  // namespace qed::cli
