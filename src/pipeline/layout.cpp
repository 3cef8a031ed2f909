#include "pipeline/layout.h"

#include <fmt/format.h>

namespace qed::pipeline {

namespace fs = std::filesystem;

fs::path OutputLayout::shard_output(const Stage& stage, int shard) const {
  const fs::path out(stage.output);
  return root / "shards" / stage.name /
         fmt::format("{}.shard-{}-of-{}{}", out.stem().string(), shard, stage.shards, out.extension().string());
}

void OutputLayout::create_dirs() const {
  for (const auto& dir : {root, meta_dir(), scripts_dir(), status_dir(), logs_dir()}) fs::create_directories(dir);
}

namespace {

// FNV-1a, 64-bit: stable across runs and machines (std::hash is not), and collisions don't matter here.
struct Fnv1a {
  uint64_t h = 1469598103934665603ULL;
  void add(const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ULL;
    }
    h ^= 0xff;  // separator, so ("ab","c") and ("a","bc") differ
    h *= 1099511628211ULL;
  }
};

}  // namespace

std::string stage_fingerprint(const PipelineSpec& spec, const Stage& stage) {
  Fnv1a f;
  f.add(stage.command);
  for (const auto& a : stage.args) f.add(a);
  for (const auto& [k, v] : spec.env) f.add(k + "=" + v);
  for (const auto& [k, v] : stage.env) f.add(k + "=" + v);
  for (const auto& [k, v] : spec.data) f.add(k + "=" + v.string());
  for (const auto& line : spec.setup) f.add(line);
  f.add(std::to_string(stage.shards));
  f.add(stage.output);
  f.add(stage.merge_key);
  for (const auto& name : stage.services) {
    const Service& s = spec.services.at(name);
    f.add(s.command);
    f.add(std::to_string(s.port));
  }
  return fmt::format("{:016x}", f.h);
}

}  // namespace qed::pipeline
