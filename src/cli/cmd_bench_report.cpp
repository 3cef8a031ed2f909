// qed bench report: bench/results/*.json (shared/design.md "Bench results") → one Markdown report: first a comparison
// across runs (per model: every workload × metric against every engine/precision/spec measured, decode throughput
// vs batch as lines, the rest as grouped bars: the BF16 / FP8 / FP8+ReDrafter table of the reference workflow), then
// a table per run with its provenance and one PNG bar chart per (run, metric), all drawn by matplotlib.
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/bench_command.h"
#include "cli/commands.h"
#include "core/error.h"

namespace qed::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Draws every chart in one interpreter (matplotlib's import is the slow part): argv[1] is a JSON file with
// [{"png", "title", "metric", "labels", "values"}].
constexpr const char* kPlotScript = R"PY(
import json
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
def bars(chart):
    labels, values = chart["labels"], chart["values"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.4))
    drawn = ax.barh(range(len(labels)), values, color="#4878a8")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.bar_label(drawn, fmt="%.4g", fontsize=7, padding=2)
    ax.margins(x=0.15)
    ax.set_xlabel(chart["metric"])
    return fig, ax
def grouped(chart):
    labels, series = chart["labels"], chart["series"]
    height = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) * len(series) + 1.6))
    for i, s in enumerate(series):
        ys = [j + i * height for j in range(len(labels))]
        xs = [0 if v is None else v for v in s["values"]]
        drawn = ax.barh(ys, xs, height=height, label=s["name"])
        ax.bar_label(drawn, labels=["" if v is None else f"{v:.4g}" for v in s["values"]], fontsize=7, padding=2)
    ax.set_yticks([j + height * (len(series) - 1) / 2 for j in range(len(labels))], labels, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.15)
    ax.set_xlabel(chart["metric"])
    ax.legend(fontsize=7)
    return fig, ax
def lines(chart):
    fig, ax = plt.subplots(figsize=(7, 4))
    for s in chart["series"]:
        ax.plot(s["x"], s["values"], marker="o", label=s["name"])
        for x, y in zip(s["x"], s["values"]):
            ax.annotate(f"{y:.4g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({x for s in chart["series"] for x in s["x"]}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(chart["x_label"])
    ax.set_ylabel(chart["metric"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig, ax
def scatter(chart):
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in chart["points"]:
        ax.scatter(p["x"], p["y"], s=40)
        ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(chart["x_label"])
    ax.set_ylabel(chart["metric"])
    ax.grid(alpha=0.3)
    ax.margins(x=0.45, y=0.2)  # room for the labels right of the points
    return fig, ax
for chart in json.load(open(sys.argv[1])):
    kinds = {"bars": bars, "grouped": grouped, "lines": lines, "scatter": scatter}
    fig, ax = kinds[chart.get("kind", "bars")](chart)
    ax.set_title(chart["title"], fontsize=9)
    fig.tight_layout()
    fig.savefig(chart["png"], dpi=110)
    plt.close(fig)
)PY";

struct Run {
  std::string file;
  json provenance;
  std::vector<json> results;
};

Run load_run(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path.string());
  json doc;
  try {
    doc = json::parse(in);
  } catch (const json::parse_error& e) {
    fail("{}: not JSON: {}", path.string(), e.what());
  }
  if (!doc.is_object() || !doc.contains("results") || !doc["results"].is_array()) {
    fail("{}: not a bench result (needs a 'results' list)", path.string());
  }
  Run run{path.filename().string(), doc.value("provenance", json::object()), {}};
  for (const auto& r : doc["results"]) {
    if (!r.is_object() || !r.contains("metric") || !r.contains("value") || !r["value"].is_number()) {
      fail("{}: each result needs 'metric' and a numeric 'value'", path.string());
    }
    run.results.push_back(r);
  }
  return run;
}

std::string field(const json& r, const char* key) {
  if (!r.contains(key) || r[key].is_null()) return "";
  return r[key].is_string() ? r[key].get<std::string>() : r[key].dump();
}

// What tells two results of one metric apart: the descriptive fields that vary inside the run.
std::string label(const json& r, const std::vector<std::string>& varying) {
  std::string out;
  for (const auto& key : varying) {
    std::string v = field(r, key.c_str());
    if (v.empty()) continue;
    if (!out.empty()) out += " / ";
    out += v;
  }
  return out.empty() ? field(r, "metric") : out;
}

std::string format_value(double v) {
  return fmt::format("{:.6g}", v);
}

void run_plots(const std::string& python, const json& charts, const std::string& spec_path) {
  {
    std::ofstream spec(spec_path);
    spec << charts.dump();
    if (!spec) fail("bench report: cannot write {}", spec_path);
  }
  std::vector<std::string> argv{python, "-c", kPlotScript, spec_path};
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) fail("bench report: fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    execvp(cargv[0], cargv.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::error_code ec;
  fs::remove(spec_path, ec);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail("bench report: '{} -c <plot script>' failed (exit {}); is matplotlib installed? (--no-plots skips PNGs)",
         python, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
}

std::string safe_name(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return s;
}

// engine / precision / spec of a result: what the comparison puts side by side.
std::string variant_of(const json& r) {
  std::string v = field(r, "engine");
  for (const char* key : {"precision", "spec"}) {
    const std::string f = field(r, key);
    if (!f.empty() && f != "none" && f != "n/a") v += " " + f;
  }
  return v.empty() ? "?" : v;
}

// decode_b<N> → N, else 0.
int decode_batch(const std::string& workload) {
  if (workload.rfind("decode_b", 0) != 0) return 0;
  try {
    return std::stoi(workload.substr(8));
  } catch (const std::exception&) {
    return 0;
  }
}

// The section that compares runs: per model, rows workload/metric, columns the variants (in first-seen order).
void write_comparison(const std::vector<Run>& runs, const std::string& out_dir, bool plots, std::ostringstream& md,
                      json& charts) {
  struct Row {
    std::map<std::string, double> by_variant;
  };
  std::map<std::string, std::vector<std::string>> variants;  // model → variants, first seen first
  std::map<std::string, std::map<std::pair<std::string, std::string>, Row>> rows;  // model → (workload, metric)
  for (const Run& run : runs) {
    for (const json& r : run.results) {
      const std::string model = field(r, "model"), variant = variant_of(r);
      auto& seen = variants[model];
      if (std::find(seen.begin(), seen.end(), variant) == seen.end()) seen.push_back(variant);
      rows[model][{field(r, "workload"), field(r, "metric")}].by_variant[variant] = r["value"].get<double>();
    }
  }
  bool any = false;
  for (const auto& [model, names] : variants) {
    if (model.empty() || names.size() < 2) continue;  // nothing to compare (no model: e.g. sandbox runs)
    if (!any) md << "\n## Comparison across runs\n";
    any = true;
    md << "\n### " << (model.empty() ? "(no model)" : model) << "\n\n| workload | metric |";
    for (const auto& v : names) md << " " << v << " |";
    md << "\n|---|---|";
    for (size_t i = 0; i < names.size(); ++i) md << "---|";
    md << "\n";
    std::map<std::string, json> grouped;                                                         // metric → chart
    std::map<std::string, std::map<std::string, std::vector<std::pair<int, double>>>> by_batch;  // metric → variant
    for (const auto& [key, row] : rows[model]) {
      const auto& [workload, metric] = key;
      if (row.by_variant.size() < 2) continue;  // measured for one variant only: its run's own table has it
      md << "| " << workload << " | " << metric << " |";
      for (const auto& v : names) {
        auto it = row.by_variant.find(v);
        md << " " << (it == row.by_variant.end() ? "—" : format_value(it->second)) << " |";
      }
      md << "\n";
      if (const int batch = decode_batch(workload); batch > 0) {
        for (const auto& [v, value] : row.by_variant) by_batch[metric][v].emplace_back(batch, value);
        continue;
      }
      json& chart = grouped[metric];
      if (chart.is_null()) {
        chart = {{"kind", "grouped"},
                 {"title", model + ": " + metric},
                 {"metric", metric},
                 {"labels", json::array()},
                 {"series", json::array()}};
        for (const auto& v : names) chart["series"].push_back({{"name", v}, {"values", json::array()}});
      }
      chart["labels"].push_back(workload);
      for (size_t i = 0; i < names.size(); ++i) {
        auto it = row.by_variant.find(names[i]);
        chart["series"][i]["values"].push_back(it == row.by_variant.end() ? json(nullptr) : json(it->second));
      }
    }
    if (!plots) continue;
    const std::string stem = "compare." + safe_name(model.empty() ? "model" : model);
    // Speculative decoding: speedup against the mean accepted length, one point per (variant, workload).
    json points = json::array();
    for (const auto& [key, row] : rows[model]) {
      if (key.second != "speedup" && key.second != "speedup_vs_none") continue;  // bench offline --spec: the latter
      const auto accepted = rows[model].find({key.first, "mean_accepted_length"});
      if (accepted == rows[model].end()) continue;
      for (const auto& [v, speedup] : row.by_variant) {
        const auto a = accepted->second.by_variant.find(v);
        if (a != accepted->second.by_variant.end())
          points.push_back({{"x", a->second}, {"y", speedup}, {"label", v + " / " + key.first}});
      }
    }
    if (!points.empty()) {
      const std::string png = safe_name(stem + ".speedup_vs_acceptance") + ".png";
      charts.push_back({{"kind", "scatter"},
                        {"png", (fs::path(out_dir) / png).string()},
                        {"title", model + ": speculative decoding speedup vs acceptance"},
                        {"metric", "speedup"},
                        {"x_label", "mean accepted length (tokens per verification step)"},
                        {"points", points}});
      md << "\n![speedup vs acceptance](" << png << ")\n";
    }
    for (auto& [metric, series_by_variant] : by_batch) {
      json chart{{"kind", "lines"},
                 {"title", model + ": " + metric + " vs decode batch"},
                 {"metric", metric},
                 {"x_label", "decode batch (sequences)"},
                 {"series", json::array()}};
      for (const auto& v : names) {
        auto it = series_by_variant.find(v);
        if (it == series_by_variant.end() || it->second.size() < 2) continue;
        std::sort(it->second.begin(), it->second.end());
        json s{{"name", v}, {"x", json::array()}, {"values", json::array()}};
        for (const auto& [x, y] : it->second) {
          s["x"].push_back(x);
          s["values"].push_back(y);
        }
        chart["series"].push_back(std::move(s));
      }
      if (chart["series"].empty()) continue;
      const std::string png = safe_name(stem + ".decode." + metric) + ".png";
      chart["png"] = (fs::path(out_dir) / png).string();
      md << "\n![" << metric << " vs batch](" << png << ")\n";
      charts.push_back(std::move(chart));
    }
    for (auto& [metric, chart] : grouped) {
      const std::string png = safe_name(stem + "." + metric) + ".png";
      chart["png"] = (fs::path(out_dir) / png).string();
      md << "\n![" << metric << "](" << png << ")\n";
      charts.push_back(std::move(chart));
    }
  }
}

// RUNS: bench JSON files and folders of them (their *.json, sorted).
std::vector<fs::path> run_files(const std::vector<std::string>& sources) {
  std::vector<fs::path> files;
  for (const std::string& source : sources) {
    std::error_code ec;
    if (fs::is_directory(source, ec)) {
      std::vector<fs::path> found;
      for (const auto& entry : fs::directory_iterator(source))
        if (entry.path().extension() == ".json") found.push_back(entry.path());
      if (found.empty()) fail("bench report: no .json results in {}", source);
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(source, ec)) {
      files.emplace_back(source);
    } else {
      fail("bench report: {}: no such file or folder", source);
    }
  }
  return files;
}

void write_report(const std::vector<std::string>& sources, const std::string& out_dir, bool plots,
                  const std::string& python) {
  std::error_code ec;
  const std::vector<fs::path> files = run_files(sources);
  std::string results_dir;
  for (const auto& source : sources) results_dir += (results_dir.empty() ? "" : " ") + source;
  fs::create_directories(out_dir, ec);
  if (ec) fail("bench report: cannot create {}: {}", out_dir, ec.message());

  std::ostringstream md;
  md << "# qed benchmark report\n\nGenerated by `qed bench report` from `" << results_dir << "` (" << files.size()
     << " runs). Values are as measured; see each run's device and command.\n";
  json charts = json::array();
  std::vector<Run> runs;
  for (const auto& path : files) runs.push_back(load_run(path));
  write_comparison(runs, out_dir, plots, md, charts);
  for (const Run& run : runs) {
    const json& p = run.provenance;
    md << "\n## " << run.file << "\n\n";
    md << fmt::format("- date: {}\n- device: {}\n- git: `{}`\n- command: `{}`\n", field(p, "date"), field(p, "device"),
                      field(p, "git_sha"), field(p, "command"));
    std::vector<std::string> varying;
    for (const char* key : {"engine", "model", "precision", "spec", "workload"}) {
      std::string first = run.results.empty() ? "" : field(run.results[0], key);
      bool differs =
          std::any_of(run.results.begin(), run.results.end(), [&](const json& r) { return field(r, key) != first; });
      if (differs) varying.emplace_back(key);
    }
    md << "\n| engine | model | precision | spec | workload | metric | value |\n|---|---|---|---|---|---|---|\n";
    std::map<std::string, std::vector<const json*>> by_metric;
    for (const auto& r : run.results) {
      md << fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", field(r, "engine"), field(r, "model"),
                        field(r, "precision"), field(r, "spec"), field(r, "workload"), field(r, "metric"),
                        format_value(r["value"].get<double>()));
      by_metric[field(r, "metric")].push_back(&r);
    }
    if (!plots) continue;
    // X_p50 / X_p90 / X_p99 (serve latencies): one chart of every X's percentiles instead of a bar chart each.
    std::map<std::string, std::map<std::string, double>> percentiles;  // X → p → value (one result per metric)
    for (const auto& [metric, rows] : by_metric) {
      const size_t at = metric.rfind("_p");
      if (at == std::string::npos || rows.size() != 1) continue;
      const std::string pct = metric.substr(at + 1);
      if (pct == "p50" || pct == "p90" || pct == "p95" || pct == "p99")
        percentiles[metric.substr(0, at)][pct] = (*rows[0])["value"];
    }
    std::vector<std::string> drawn;
    if (!percentiles.empty()) {
      const std::vector<std::string> order{"p50", "p90", "p95", "p99"};
      json chart{{"kind", "grouped"},
                 {"title", run.file + ": latency percentiles"},
                 {"metric", "ms"},
                 {"labels", json::array()},
                 {"series", json::array()}};
      for (const auto& pct : order) {
        json values = json::array();
        bool any = false;
        for (const auto& [name, ps] : percentiles) {
          auto it = ps.find(pct);
          values.push_back(it == ps.end() ? json(nullptr) : json(it->second));
          any = any || it != ps.end();
          if (it != ps.end()) drawn.push_back(name + "_" + pct);
        }
        if (any) chart["series"].push_back({{"name", pct}, {"values", values}});
      }
      for (const auto& [name, ps] : percentiles) chart["labels"].push_back(name);
      const std::string png = safe_name(fs::path(run.file).stem().string() + ".latency_percentiles") + ".png";
      chart["png"] = (fs::path(out_dir) / png).string();
      charts.push_back(std::move(chart));
      md << "\n![latency percentiles](" << png << ")\n";
    }
    for (const auto& [metric, rows] : by_metric) {
      if (std::find(drawn.begin(), drawn.end(), metric) != drawn.end()) continue;
      std::string png = safe_name(fs::path(run.file).stem().string() + "." + metric) + ".png";
      json chart{{"png", (fs::path(out_dir) / png).string()},
                 {"title", run.file},
                 {"metric", metric},
                 {"labels", json::array()},
                 {"values", json::array()}};
      for (const json* r : rows) {
        chart["labels"].push_back(label(*r, varying));
        chart["values"].push_back((*r)["value"]);
      }
      charts.push_back(std::move(chart));
      md << "\n![" << metric << "](" << png << ")\n";
    }
  }
  if (!charts.empty()) run_plots(python, charts, (fs::path(out_dir) / ".charts.json").string());
  std::string report = (fs::path(out_dir) / "README.md").string();
  std::ofstream out(report);
  out << md.str();
  if (!out) fail("bench report: cannot write {}", report);
  fmt::print("bench report: {} runs, {} plots -> {}\n", files.size(), charts.size(), report);
}

}  // namespace

void register_bench_report(CLI::App& app) {
  CLI::App* bench = bench_command(app);
  auto runs = std::make_shared<std::vector<std::string>>();
  auto results = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>("bench/report");
  auto python = std::make_shared<std::string>("python3");
  auto no_plots = std::make_shared<bool>(false);
  auto* cmd = bench->add_subcommand("report", "Render bench JSON runs as Markdown + PNG plots");
  cmd->add_option("runs", *runs, "Bench JSON files or folders of them (default: bench/results)");
  cmd->add_option("--results", *results, "A folder of bench JSON files (the same as naming it among RUNS)");
  cmd->add_option("--out", *out, "Folder for README.md and the PNGs")->capture_default_str();
  cmd->add_option("--python", *python, "Interpreter with matplotlib")->capture_default_str();
  cmd->add_flag("--no-plots", *no_plots, "Markdown only");
  cmd->callback([=] {
    std::vector<std::string> sources = *runs;
    if (!results->empty()) sources.push_back(*results);
    if (sources.empty()) sources.push_back("bench/results");
    write_report(sources, *out, !*no_plots, *python);
  });
}

}  // namespace qed::cli
