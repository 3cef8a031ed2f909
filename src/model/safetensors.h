#pragma once
// Safetensors checkpoints: one file or a sharded set (model.safetensors.index.json), mmap'd, headers validated.
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__"},
// then the data; offsets are relative to the end of the header.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mmap_file.h"

namespace qed {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t offset = 0;  // from the start of the data section
  size_t nbytes = 0;
  const unsigned char* data = nullptr;  // into the mmap; null until bound to a file

  int64_t numel() const;
  float at(size_t index) const { return load_as_float(data, dtype, index); }
};

struct SafetensorsHeader {
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  size_t data_start = 0;  // 8 + header length
};

// Parses and validates a whole safetensors image held in memory (header JSON, dtypes, shapes × dtype size ==
// byte range, ranges in bounds and non-overlapping). Throws qed::Error prefixed with `source`. Used by the fuzzer.
SafetensorsHeader parse_safetensors(const unsigned char* bytes, size_t size, const std::string& source);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const std::string& path() const { return file_.path(); }

 private:
  MmapFile file_;
  SafetensorsHeader header_;
};

// All tensors of a model directory: model.safetensors, or the shards named by model.safetensors.index.json.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& model_dir);
  // Tensors that live in memory the caller owns and keeps alive (a tensor-parallel rank's shard: views into another
  // checkpoint's mmap plus sliced copies); `label` stands for the directory in error messages.
  static Checkpoint from_memory(const std::string& label, std::vector<TensorInfo> tensors);
  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& get(const std::string& name) const;  // throws naming the tensor and directory
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
  std::map<std::string, TensorInfo> memory_;  // from_memory only (map nodes keep their address on a move)
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
};
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The layout write_safetensors gives `tensors` (their data pointers are not read): the file's first bytes (length
// prefix + header JSON, padded to 8) and where each tensor's bytes go, for writers that fill the data ranges
// themselves (qed quantize streams tensors into place from several threads). Throws as write_safetensors does.
struct SafetensorsLayout {
  std::string head;
  std::vector<size_t> offsets;  // per tensor of `tensors`, in its order: from the start of the file
  std::vector<size_t> sizes;    // bytes
  size_t file_size = 0;
};
SafetensorsLayout plan_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                                   const std::map<std::string, std::string>& metadata = {});

}  // namespace qed
