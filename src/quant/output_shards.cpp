#include "quant/output_shards.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"

namespace qed::quant {
namespace {

namespace fs = std::filesystem;

void pwrite_all(int fd, const void* data, size_t bytes, size_t offset, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd, p, bytes, off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("{}: write failed: {}", path, n < 0 ? std::strerror(errno) : "no progress");
    p += n;
    bytes -= size_t(n);
    offset += size_t(n);
  }
}

std::string shard_name(size_t index, size_t count) {
  if (count == 1) return "model.safetensors";
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

}  // namespace

OutputShards::OutputShards(const std::string& out_dir, const std::vector<std::vector<OutputTensor>>& shards,
                           const std::map<std::string, std::string>& metadata)
    : out_dir_(out_dir) {
  try {
    create(shards, metadata);
  } catch (...) {
    discard();  // the destructor does not run for a constructor that throws
    throw;
  }
}

void OutputShards::create(const std::vector<std::vector<OutputTensor>>& shards,
                          const std::map<std::string, std::string>& metadata) {
  if (shards.empty()) fail("{}: no tensors to write", out_dir_);
  for (size_t s = 0; s < shards.size(); ++s) {
    File& file = files_.emplace_back();
    file.name = shard_name(s, shards.size());
    file.temp_path = (fs::path(out_dir_) / file.name).string() + ".tmp";
    std::vector<TensorToWrite> specs;
    for (const OutputTensor& t : shards[s]) specs.push_back({t.name, t.dtype, t.shape, nullptr});
    const SafetensorsLayout layout = plan_safetensors(file.temp_path, specs, metadata);
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!slots_.emplace(specs[i].name, Slot{int(s), layout.offsets[i], layout.sizes[i]}).second)
        fail("{}: tensor '{}' given twice", out_dir_, specs[i].name);
      total_bytes_ += layout.sizes[i];
    }
    file.fd = ::open(file.temp_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (file.fd < 0) fail("{}: cannot open for writing: {}", file.temp_path, std::strerror(errno));
    if (::ftruncate(file.fd, off_t(layout.file_size)) != 0)
      fail("{}: cannot size to {} bytes: {}", file.temp_path, layout.file_size, std::strerror(errno));
    pwrite_all(file.fd, layout.head.data(), layout.head.size(), 0, file.temp_path);
  }
}

void OutputShards::discard() {
  for (File& file : files_) {
    if (file.fd >= 0) ::close(file.fd);
    file.fd = -1;
    if (!committed_) ::unlink(file.temp_path.c_str());
  }
}

OutputShards::~OutputShards() {
  discard();
}

size_t OutputShards::tensor_bytes(const std::string& name) const {
  auto it = slots_.find(name);
  if (it == slots_.end()) fail("{}: no output tensor '{}'", out_dir_, name);
  return it->second.bytes;
}

void OutputShards::write(const std::string& name, size_t offset, const void* data, size_t bytes) const {
  auto it = slots_.find(name);
  if (it == slots_.end()) fail("{}: no output tensor '{}'", out_dir_, name);
  const Slot& slot = it->second;
  if (offset > slot.bytes || bytes > slot.bytes - offset)
    fail("{}: write of {} bytes at {} overruns tensor '{}' ({} bytes)", out_dir_, bytes, offset, name, slot.bytes);
  const File& file = files_[size_t(slot.file)];
  pwrite_all(file.fd, data, bytes, slot.offset + offset, file.temp_path);
}

void OutputShards::commit() {
  for (File& file : files_) {
    if (::close(file.fd) != 0) {
      file.fd = -1;
      fail("{}: write failed: {}", file.temp_path, std::strerror(errno));
    }
    file.fd = -1;
  }
  // A single model.safetensors wins over an index in every loader, and an index names its own shards: whatever an
  // earlier run left must go, or it would shadow (or sit beside) this one.
  std::error_code ec;
  const std::regex shard_pattern(R"(model-\d{5}-of-\d{5}\.safetensors)");
  for (const auto& entry : fs::directory_iterator(out_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "model.safetensors" || name == "model.safetensors.index.json" ||
        std::regex_match(name, shard_pattern)) {
      fs::remove(entry.path(), ec);
    }
  }
  for (const File& file : files_) {
    fs::rename(file.temp_path, fs::path(out_dir_) / file.name, ec);
    if (ec) fail("{}: cannot rename {} into place: {}", out_dir_, file.temp_path, ec.message());
  }
  committed_ = true;
  if (files_.size() > 1) {
    nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes_}}},
                                    {"weight_map", nlohmann::ordered_json::object()}};
    for (const auto& [name, slot] : slots_) index["weight_map"][name] = files_[size_t(slot.file)].name;
    const std::string path = (fs::path(out_dir_) / "model.safetensors.index.json").string();
    std::ofstream out(path);
    out << index.dump(2) << "\n";
    if (!out) fail("{}: cannot write", path);
  }
}

}  // namespace qed::quant
