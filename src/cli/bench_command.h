#pragma once
// `qed bench` is the parent of several subcommands registered from their own files (offline, serve, report);
// whichever registers first creates it.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

namespace qed::cli {

CLI::App* bench_command(CLI::App& app);
// Writes a bench result document (provenance + results) to `path`; one-line error naming it when that fails.
void write_bench_json(const std::string& path, const nlohmann::json& document);
// A bench result's provenance (shared/design.md): device/driver/cuda as given (strings or null), plus the build's
// git sha, the UTC time now and this process's command line.
nlohmann::json bench_provenance(nlohmann::json device, nlohmann::json driver, nlohmann::json cuda);
// The UTC time now, ISO 8601 ("2026-12-02T01:43:53Z").
std::string utc_now_iso();
// The commit this binary was built from (version.h, rewritten at every build); the checkout a bench runs in may
// be a copy without its history (the GPU box), so it is not asked.
std::string build_git_sha();

}  // namespace qed::cli
