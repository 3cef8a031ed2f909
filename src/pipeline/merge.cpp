#include "pipeline/merge.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/error.h"

namespace qed::pipeline {

namespace fs = std::filesystem;

MergeStats merge_jsonl(const std::vector<fs::path>& shards, const std::string& key, const fs::path& output) {
  MergeStats stats;
  std::unordered_set<std::string> seen;
  if (output.has_parent_path()) fs::create_directories(output.parent_path());
  const fs::path tmp = output.string() + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) fail("{}: cannot write merged output", tmp.string());

  for (const auto& shard : shards) {
    std::ifstream in(shard, std::ios::binary);
    if (!in) {
      if (fs::exists(shard)) fail("{}: cannot read shard output", shard.string());
      ++stats.missing_shards;
      continue;
    }
    std::string line;
    size_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      const bool terminated = !in.eof();  // getline hit '\n' rather than end of file
      if (line.empty()) continue;
      const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (row.is_discarded() || !row.is_object()) {
        if (!terminated) {
          ++stats.truncated;
          continue;
        }
        fail("{}:{}: not a JSON object row", shard.string(), line_no);
      }
      const auto it = row.find(key);
      // Prefixed so a keyed row never collides with a keyless row of the same text.
      std::string identity(1, it != row.end() ? 'k' : 'r');
      identity.append(it != row.end() ? it->dump() : line);
      if (!seen.insert(identity).second) {
        ++stats.duplicates;
        continue;
      }
      out << line << '\n';
      ++stats.rows;
    }
  }
  out.close();
  if (!out) fail("{}: write failed", tmp.string());
  fs::rename(tmp, output);
  return stats;
}

}  // namespace qed::pipeline

#include "pipeline/state.h"

namespace qed::pipeline {

MergeStats merge_array_stage(const PipelineSpec& spec, const OutputLayout& layout, const Stage& stage) {
  if (!stage.is_array()) fail("stage '{}' is not an array stage; nothing to merge", stage.name);
  const std::string fingerprint = stage_fingerprint(spec, stage);
  std::vector<fs::path> shards;
  std::string not_done;
  for (int i = 0; i < stage.shards; ++i) {
    if (read_marker(layout.shard_marker(stage.name, i), fingerprint) != MarkerState::kDone) {
      not_done += (not_done.empty() ? "" : ", ") + std::to_string(i);
    }
    shards.push_back(layout.shard_output(stage, i));
  }
  if (!not_done.empty()) fail("stage '{}': cannot merge, shards not done: {}", stage.name, not_done);
  return merge_jsonl(shards, stage.merge_key, layout.output(stage));
}

}  // namespace qed::pipeline
