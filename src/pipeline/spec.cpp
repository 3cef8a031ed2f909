// YAML → PipelineSpec. Every error names `file:line:column` of the offending node (yaml-cpp's Mark is 0-based).
#include "pipeline/spec.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "core/error.h"

namespace qed::pipeline {
namespace {

namespace fs = std::filesystem;

class Parser {
 public:
  explicit Parser(fs::path path) : path_(std::move(path)) {}

  std::string where(const YAML::Mark& mark) const {
    return fmt::format("{}:{}:{}", path_.string(), mark.line + 1, mark.column + 1);
  }
  std::string where(const YAML::Node& node) const { return where(node.Mark()); }
  SourceLocation location(const YAML::Node& node) const { return {node.Mark().line + 1, node.Mark().column + 1}; }

  // Rejects keys outside `allowed` (typos must not be silently ignored) and keys given twice.
  void check_map(const YAML::Node& node, const std::string& what, const std::vector<std::string>& allowed) const {
    if (!node.IsMap()) fail("{}: {} must be a mapping", where(node), what);
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const std::string key = scalar(kv.first, what + " key");
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        std::string expected;
        for (const auto& a : allowed) expected += (expected.empty() ? "" : ", ") + a;
        fail("{}: {}: unknown key '{}' (expected one of: {})", where(kv.first), what, key, expected);
      }
      if (!seen.insert(key).second) fail("{}: {}: key '{}' given twice", where(kv.first), what, key);
    }
  }

  std::string scalar(const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar()) fail("{}: {} must be a string", where(node), what);
    return node.Scalar();
  }

  std::string nonempty(const YAML::Node& node, const std::string& what) const {
    std::string value = scalar(node, what);
    if (value.empty()) fail("{}: {} must not be empty", where(node), what);
    return value;
  }

  int integer(const YAML::Node& node, const std::string& what, int min_value) const {
    const std::string text = scalar(node, what);
    int value = 0;
    size_t used = 0;
    try {
      value = std::stoi(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size()) fail("{}: {} must be an integer, got '{}'", where(node), what, text);
    if (value < min_value) fail("{}: {} must be >= {}, got {}", where(node), what, min_value, value);
    return value;
  }

  double number(const YAML::Node& node, const std::string& what) const {
    const std::string text = scalar(node, what);
    double value = 0;
    size_t used = 0;
    try {
      value = std::stod(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size() || value <= 0) {
      fail("{}: {} must be a positive number, got '{}'", where(node), what, text);
    }
    return value;
  }

  // A list of strings; a single string is accepted as a list of one (`needs: tokenize`).
  std::vector<std::string> string_list(const YAML::Node& node, const std::string& what) const {
    if (node.IsScalar()) return {nonempty(node, what)};
    if (!node.IsSequence()) fail("{}: {} must be a string or a list of strings", where(node), what);
    std::vector<std::string> out;
    for (const auto& item : node) out.push_back(scalar(item, what + " entry"));
    return out;
  }

  std::map<std::string, std::string> string_map(const YAML::Node& node, const std::string& what) const {
    if (!node.IsMap()) fail("{}: {} must be a mapping of names to strings", where(node), what);
    std::map<std::string, std::string> out;
    for (const auto& kv : node) {
      const std::string key = scalar(kv.first, what + " key");
      if (!out.emplace(key, scalar(kv.second, what + "." + key)).second) {
        fail("{}: {}: key '{}' given twice", where(kv.first), what, key);
      }
    }
    return out;
  }

  void check_name(const YAML::Node& node, const std::string& name, const std::string& what,
                  const std::string& extra_chars) const {
    const bool ok = !name.empty() && std::all_of(name.begin(), name.end(), [&](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || extra_chars.find(c) != std::string::npos;
    });
    if (!ok) {
      fail("{}: {} name '{}' may only contain letters, digits, '_'{}", where(node), what, name,
           extra_chars.empty() ? "" : fmt::format(" and '{}'", extra_chars));
    }
  }

  // Slurm time syntax: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
  std::string slurm_time(const YAML::Node& node, const std::string& what) const {
    std::string value = nonempty(node, what);
    const bool ok = std::all_of(value.begin(), value.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) || c == ':' || c == '-';
    });
    if (!ok || !std::isdigit(static_cast<unsigned char>(value.front()))) {
      fail("{}: {} must be a Slurm time like 30, 01:00:00 or 1-00:00:00, got '{}'", where(node), what, value);
    }
    return value;
  }

  std::string mem(const YAML::Node& node, const std::string& what) const {
    std::string value = nonempty(node, what);
    size_t digits = 0;
    while (digits < value.size() && std::isdigit(static_cast<unsigned char>(value[digits]))) ++digits;
    const std::string unit = value.substr(digits);
    if (digits == 0 || !(unit.empty() || unit == "K" || unit == "M" || unit == "G" || unit == "T")) {
      fail("{}: {} must be a size like 500M or 8G, got '{}'", where(node), what, value);
    }
    return value;
  }

  fs::path path_value(const YAML::Node& node, const std::string& what, const fs::path& base) const {
    fs::path p = nonempty(node, what);
    return (p.is_absolute() ? p : base / p).lexically_normal();
  }

 private:
  fs::path path_;
};

Resources parse_resources(const Parser& p, const YAML::Node& node, const std::string& what) {
  p.check_map(node, what, {"gpus", "cpus", "mem", "time"});
  Resources r;
  if (node["gpus"]) r.gpus = p.integer(node["gpus"], what + ".gpus", 0);
  if (node["cpus"]) r.cpus = p.integer(node["cpus"], what + ".cpus", 1);
  if (node["mem"]) r.mem = p.mem(node["mem"], what + ".mem");
  if (node["time"]) r.time = p.slurm_time(node["time"], what + ".time");
  return r;
}

Service parse_service(const Parser& p, const std::string& name, const YAML::Node& node) {
  const std::string what = "service '" + name + "'";
  p.check_map(node, what, {"command", "port", "health", "startup_timeout"});
  Service s;
  s.name = name;
  s.location = p.location(node);
  if (!node["command"]) fail("{}: {}: missing 'command'", p.where(node), what);
  s.command = p.nonempty(node["command"], what + ".command");
  if (node["port"]) {
    if (node["port"].IsScalar() && node["port"].Scalar() == "auto") {
      s.port = Service::kAutoPort;
    } else {
      s.port = p.integer(node["port"], what + ".port", 1);
      if (s.port > 65535) fail("{}: {}.port must be <= 65535", p.where(node["port"]), what);
    }
  }
  if (node["startup_timeout"]) s.startup_timeout_s = p.number(node["startup_timeout"], what + ".startup_timeout");
  // Without a health check the stage would race the service's startup.
  if (!node["health"])
    fail("{}: {}: missing 'health' (an http URL or a command that succeeds once ready)", p.where(node), what);
  const YAML::Node health = node["health"];
  p.check_map(health, what + ".health", {"http", "command"});
  if (health["http"]) s.health_http = p.nonempty(health["http"], what + ".health.http");
  if (health["command"]) s.health_command = p.nonempty(health["command"], what + ".health.command");
  if (s.health_http.empty() == s.health_command.empty()) {
    fail("{}: {}.health needs exactly one of 'http' or 'command'", p.where(health), what);
  }
  if (!s.health_http.empty() && s.health_http.rfind("http://", 0) != 0) {
    if (s.health_http.front() != '/') {
      fail("{}: {}.health.http must be a URL (http://...) or a path (/health), got '{}'", p.where(health["http"]), what,
           s.health_http);
    }
    if (s.port == 0) {
      fail("{}: {}.health.http is a path, so the service needs a 'port' (a number or auto)", p.where(health["http"]),
           what);
    }
  }
  return s;
}

Stage parse_stage(const Parser& p, const std::string& name, const YAML::Node& node) {
  const std::string what = "stage '" + name + "'";
  p.check_map(node, what, {"command", "args", "needs", "resources", "array", "output", "services", "env"});
  Stage s;
  s.name = name;
  s.location = p.location(node);
  if (!node["command"]) fail("{}: {}: missing 'command'", p.where(node), what);
  s.command = p.nonempty(node["command"], what + ".command");
  if (node["args"]) s.args = p.string_list(node["args"], what + ".args");
  if (node["needs"]) s.needs = p.string_list(node["needs"], what + ".needs");
  if (node["resources"]) s.resources = parse_resources(p, node["resources"], what + ".resources");
  if (node["output"]) {
    s.output = p.nonempty(node["output"], what + ".output");
    const fs::path out(s.output);
    const std::string first = out.begin() == out.end() ? "" : out.begin()->string();
    if (out.is_absolute() || first == "..") {
      fail("{}: {}.output must be a path inside the output dir, got '{}'", p.where(node["output"]), what, s.output);
    }
  }
  if (node["array"]) {
    const YAML::Node array = node["array"];
    if (array.IsScalar()) {
      s.shards = p.integer(array, what + ".array", 1);
    } else {
      p.check_map(array, what + ".array", {"shards", "merge_key"});
      if (!array["shards"]) fail("{}: {}.array: missing 'shards'", p.where(array), what);
      s.shards = p.integer(array["shards"], what + ".array.shards", 1);
      if (array["merge_key"]) s.merge_key = p.nonempty(array["merge_key"], what + ".array.merge_key");
    }
    if (s.output.empty()) {
      fail("{}: {}: an array stage needs 'output' (each shard writes its own part, merged into it)", p.where(array),
           what);
    }
  }
  if (node["services"]) s.services = p.string_list(node["services"], what + ".services");
  if (node["env"]) s.env = p.string_map(node["env"], what + ".env");
  return s;
}

SlurmConfig parse_slurm(const Parser& p, const YAML::Node& node) {
  p.check_map(node, "slurm", {"partition", "account", "qos", "time", "container", "mounts", "setup", "sbatch_args"});
  SlurmConfig c;
  if (node["partition"]) c.partition = p.nonempty(node["partition"], "slurm.partition");
  if (node["account"]) c.account = p.nonempty(node["account"], "slurm.account");
  if (node["qos"]) c.qos = p.nonempty(node["qos"], "slurm.qos");
  if (node["time"]) c.time = p.slurm_time(node["time"], "slurm.time");
  if (node["container"]) c.container = p.nonempty(node["container"], "slurm.container");
  if (node["mounts"]) c.mounts = p.string_list(node["mounts"], "slurm.mounts");
  if (node["setup"]) c.setup = p.string_list(node["setup"], "slurm.setup");
  if (node["sbatch_args"]) c.sbatch_args = p.string_list(node["sbatch_args"], "slurm.sbatch_args");
  return c;
}

// Depth-first search that reports the first cycle as `a -> b -> a`.
void check_acyclic(const Parser& p, const PipelineSpec& spec, const std::map<std::string, YAML::Node>& nodes) {
  enum class Mark { kNew, kActive, kDone };
  std::map<std::string, Mark> marks;
  std::vector<std::string> path;
  std::function<void(const Stage&)> visit = [&](const Stage& s) {
    marks[s.name] = Mark::kActive;
    path.push_back(s.name);
    for (const auto& need : s.needs) {
      if (marks[need] == Mark::kActive) {
        std::string cycle;
        auto start = std::find(path.begin(), path.end(), need);
        for (auto it = start; it != path.end(); ++it) cycle += *it + " -> ";
        fail("{}: dependency cycle: {}{}", p.where(nodes.at(need)), cycle, need);
      }
      if (marks[need] == Mark::kNew) visit(spec.stage(need));
    }
    path.pop_back();
    marks[s.name] = Mark::kDone;
  };
  for (const auto& s : spec.stages) {
    if (marks[s.name] == Mark::kNew) visit(s);
  }
}

}  // namespace

const char* executor_name(ExecutorKind kind) {
  return kind == ExecutorKind::kSlurm ? "slurm" : "local";
}

const Stage& PipelineSpec::stage(const std::string& stage_name) const {
  for (const auto& s : stages) {
    if (s.name == stage_name) return s;
  }
  fail("{}: no stage named '{}'", spec_path.string(), stage_name);
}

PipelineSpec parse_spec(const std::string& yaml_text, const fs::path& path) {
  const Parser p(path);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail("{}: invalid YAML: {}", p.where(e.mark), e.msg);
  }
  if (!root.IsMap()) fail("{}: a pipeline spec must be a mapping with 'stages'", path.string());
  p.check_map(root, "pipeline",
              {"name", "executor", "output_dir", "data", "env", "setup", "slurm", "services", "stages"});

  PipelineSpec spec;
  spec.spec_path = fs::absolute(path).lexically_normal();
  spec.base_dir = spec.spec_path.parent_path();
  spec.name = root["name"] ? p.nonempty(root["name"], "name") : spec.spec_path.stem().string();
  if (root["name"]) p.check_name(root["name"], spec.name, "pipeline", "-.");
  if (root["executor"]) {
    const std::string e = p.scalar(root["executor"], "executor");
    if (e == "local") {
      spec.executor = ExecutorKind::kLocal;
    } else if (e == "slurm") {
      spec.executor = ExecutorKind::kSlurm;
    } else {
      fail("{}: executor must be 'local' or 'slurm', got '{}'", p.where(root["executor"]), e);
    }
  }
  spec.output_dir = root["output_dir"] ? p.path_value(root["output_dir"], "output_dir", spec.base_dir)
                                       : spec.base_dir / (spec.name + "-out");
  if (root["data"]) {
    const YAML::Node data = root["data"];
    if (!data.IsMap()) fail("{}: data must be a mapping of names to paths", p.where(data));
    for (const auto& kv : data) {
      const std::string name = p.scalar(kv.first, "data key");
      p.check_name(kv.first, name, "data", "");
      if (!spec.data.emplace(name, p.path_value(kv.second, "data." + name, spec.base_dir)).second) {
        fail("{}: data: key '{}' given twice", p.where(kv.first), name);
      }
    }
  }
  if (root["env"]) spec.env = p.string_map(root["env"], "env");
  if (root["setup"]) spec.setup = p.string_list(root["setup"], "setup");
  if (root["slurm"]) spec.slurm = parse_slurm(p, root["slurm"]);
  if (root["services"]) {
    const YAML::Node services = root["services"];
    if (!services.IsMap()) fail("{}: services must be a mapping of names to services", p.where(services));
    for (const auto& kv : services) {
      const std::string name = p.scalar(kv.first, "service name");
      p.check_name(kv.first, name, "service", "");
      if (!spec.services.emplace(name, parse_service(p, name, kv.second)).second) {
        fail("{}: services: '{}' given twice", p.where(kv.first), name);
      }
    }
  }

  if (!root["stages"]) fail("{}: missing 'stages'", path.string());
  const YAML::Node stages = root["stages"];
  if (!stages.IsMap() || stages.size() == 0) {
    fail("{}: stages must be a non-empty mapping of stage names to stages", p.where(stages));
  }
  std::map<std::string, YAML::Node> stage_nodes;
  for (const auto& kv : stages) {
    const std::string name = p.scalar(kv.first, "stage name");
    p.check_name(kv.first, name, "stage", "-.");
    if (!stage_nodes.emplace(name, kv.first).second) fail("{}: stages: '{}' given twice", p.where(kv.first), name);
    spec.stages.push_back(parse_stage(p, name, kv.second));
  }
  for (const auto& kv : stages) {
    const Stage& s = spec.stage(kv.first.Scalar());
    for (size_t i = 0; i < s.needs.size(); ++i) {
      const YAML::Node needs = kv.second["needs"];
      const YAML::Node at = needs.IsSequence() ? needs[i] : needs;
      if (!stage_nodes.count(s.needs[i])) {
        fail("{}: stage '{}' needs '{}', which is not a stage", p.where(at), s.name, s.needs[i]);
      }
      if (s.needs[i] == s.name) fail("{}: stage '{}' needs itself", p.where(at), s.name);
    }
    for (size_t i = 0; i < s.services.size(); ++i) {
      const YAML::Node services = kv.second["services"];
      const YAML::Node at = services.IsSequence() ? services[i] : services;
      if (!spec.services.count(s.services[i])) {
        fail("{}: stage '{}' uses service '{}', which is not defined under 'services'", p.where(at), s.name,
             s.services[i]);
      }
    }
  }
  check_acyclic(p, spec, stage_nodes);
  return spec;
}

PipelineSpec load_spec(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open pipeline spec", path.string());
  std::stringstream text;
  text << in.rdbuf();
  return parse_spec(text.str(), path);
}

std::vector<std::string> topological_order(const PipelineSpec& spec) {
  std::vector<std::string> order;
  std::set<std::string> placed;
  // Repeatedly take the first stage (in file order) whose needs are all placed: stable and obviously correct;
  // pipelines have tens of stages, not thousands. The spec was checked acyclic, so every pass places one.
  while (order.size() < spec.stages.size()) {
    const size_t before = order.size();
    for (const auto& s : spec.stages) {
      if (placed.count(s.name)) continue;
      const bool ready = std::all_of(s.needs.begin(), s.needs.end(), [&](const auto& n) { return placed.count(n); });
      if (ready) {
        order.push_back(s.name);
        placed.insert(s.name);
        break;
      }
    }
    if (order.size() == before) fail("{}: stages have a dependency cycle", spec.spec_path.string());
  }
  return order;
}

}  // namespace qed::pipeline
