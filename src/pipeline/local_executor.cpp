#include "pipeline/local_executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>

#include "core/error.h"
#include "pipeline/merge.h"
#include "pipeline/process.h"
#include "pipeline/stage_script.h"
#include "pipeline/state.h"

namespace qed::pipeline {

namespace fs = std::filesystem;

namespace {

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) fail("{}: cannot write", path.string());
  fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
}

// Runs every shard that is not done yet; returns the shards that failed.
std::vector<int> run_tasks(const OutputLayout& layout, const Stage& stage, std::ostream& progress) {
  std::vector<int> failed;
  for (int shard = 0; shard < stage.num_tasks(); ++shard) {
    const std::string task = stage.is_array() ? fmt::format("{}.shard-{}", stage.name, shard) : stage.name;
    const fs::path log = layout.logs_dir() / (task + ".log");
    const int rc = run_to_log({"bash", layout.stage_script(stage.name).string(), std::to_string(shard)}, log);
    if (rc != 0) {
      progress << fmt::format("  {}: failed with exit code {} (log: {})\n", task, rc, log.string());
      failed.push_back(shard);
    }
  }
  return failed;
}

}  // namespace

LocalRunResult run_local(const PipelineSpec& spec, const OutputLayout& layout, const fs::path& qed_bin,
                         std::ostream& progress) {
  layout.create_dirs();
  save_spec_snapshot(layout, spec);
  save_state(layout, PipelineState{"local", spec.spec_path, {}});
  const ScriptContext ctx{spec, layout, qed_bin, ExecutorKind::kLocal, ""};
  for (const auto& stage : spec.stages) write_file(layout.stage_script(stage.name), stage_script(ctx, stage));

  LocalRunResult result;
  const auto order = topological_order(spec);
  for (size_t i = 0; i < order.size(); ++i) {
    const Stage& stage = spec.stage(order[i]);
    const std::string prefix = fmt::format("[{}/{}] {}", i + 1, order.size(), stage.name);
    if (stage_done(spec, layout, stage)) {
      progress << prefix << ": done earlier, skipped\n";
      ++result.skipped;
      continue;
    }
    const auto unmet = std::find_if(stage.needs.begin(), stage.needs.end(),
                                    [&](const auto& n) { return !stage_done(spec, layout, spec.stage(n)); });
    if (unmet != stage.needs.end()) {
      progress << prefix << ": not run, it needs '" << *unmet << "', which did not finish\n";
      ++result.blocked;
      continue;
    }
    progress << prefix << (stage.is_array() ? fmt::format(": running {} shards\n", stage.shards) : ": running\n");
    progress.flush();
    ++result.ran;
    const auto failed = run_tasks(layout, stage, progress);
    if (!failed.empty()) {
      ++result.failed;
      progress << prefix << ": FAILED\n";
      continue;
    }
    if (stage.is_array()) {
      const fs::path marker = layout.marker(stage.name);
      try {
        const MergeStats m = merge_array_stage(spec, layout, stage);
        write_done_marker(marker, stage_fingerprint(spec, stage));
        progress << fmt::format("{}: merged {} rows into {} ({} duplicates dropped)\n", prefix, m.rows,
                                layout.output(stage).string(), m.duplicates);
      } catch (const Error& e) {
        std::ofstream(marker.string() + ".failed") << "1\n";
        progress << prefix << ": merge FAILED: " << e.what() << "\n";
        ++result.failed;
        continue;
      }
    }
    progress << prefix << ": done\n";
  }
  return result;
}

}  // namespace qed::pipeline
