#pragma once
// The safetensors files of a quantized checkpoint, written in place: every tensor's byte range is known before any
// data exists (plan_safetensors), so each file is created at its final size and threads pwrite their tensors into
// it as they finish; nothing waits for the whole model in memory. Files appear under their real names only in
// commit() (written beside them as NAME.tmp until then), with model.safetensors.index.json when there are several.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/safetensors.h"

namespace qed::quant {

struct OutputTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

class OutputShards {
 public:
  // `shards[i]` lists the tensors of file i; one shard is model.safetensors, N are model-0000k-of-0000N.safetensors
  // (HF's names). Creates the temporary files; throws on I/O errors or a tensor named twice.
  OutputShards(const std::string& out_dir, const std::vector<std::vector<OutputTensor>>& shards,
               const std::map<std::string, std::string>& metadata);
  ~OutputShards();  // removes the temporary files unless committed
  OutputShards(const OutputShards&) = delete;
  OutputShards& operator=(const OutputShards&) = delete;

  size_t tensor_bytes(const std::string& name) const;
  // bytes at byte `offset` of tensor `name`; thread-safe (disjoint ranges).
  void write(const std::string& name, size_t offset, const void* data, size_t bytes) const;
  // Closes and renames every file into place, replaces an earlier run's model.safetensors / index / shards, and
  // writes the index (weight_map, metadata.total_size) for more than one shard.
  void commit();

 private:
  void create(const std::vector<std::vector<OutputTensor>>& shards, const std::map<std::string, std::string>& metadata);
  void discard();  // closes the files; removes them unless committed

  struct Slot {
    int file = 0;
    size_t offset = 0, bytes = 0;
  };
  struct File {
    std::string name, temp_path;
    int fd = -1;
  };
  std::string out_dir_;
  std::vector<File> files_;
  std::map<std::string, Slot> slots_;
  size_t total_bytes_ = 0;
  bool committed_ = false;
};

}  // namespace qed::quant
