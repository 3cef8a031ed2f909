#include "model/safetensors.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "core/error.h"

namespace qed {

namespace {

// The reference implementation (huggingface/safetensors) refuses headers above 100 MB; so do we, before
// allocating anything for the JSON.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

uint64_t read_u64_le(const unsigned char* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// A JSON number that is a non-negative integer, as size_t; `what` names it in the error.
size_t non_negative_integer(const nlohmann::json& value, const std::string& source, const std::string& what) {
  if (value.is_number_unsigned()) {
    uint64_t v = value.get<uint64_t>();
    if (v > std::numeric_limits<size_t>::max() / 2) fail("{}: {} is too large ({})", source, what, v);
    return size_t(v);
  }
  if (value.is_number_integer()) fail("{}: {} must be non-negative, got {}", source, what, value.get<int64_t>());
  fail("{}: {} must be an integer, got {}", source, what, value.type_name());
}

TensorInfo parse_tensor_entry(const std::string& name, const nlohmann::json& entry, const std::string& source) {
  if (!entry.is_object()) fail("{}: tensor '{}': entry must be an object, got {}", source, name, entry.type_name());
  TensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) fail("{}: tensor '{}': missing 'dtype'", source, name);
  if (!dtype_it->is_string()) fail("{}: tensor '{}': 'dtype' must be a string", source, name);
  const auto& dtype_text = dtype_it->get_ref<const std::string&>();
  auto dtype = dtype_from_name(dtype_text);
  if (!dtype) {
    fail("{}: tensor '{}': unsupported dtype '{}' (supported: BF16, F16, F32, F8_E4M3, I8, U8, I32, I64)", source, name,
         dtype_text);
  }
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) fail("{}: tensor '{}': missing 'shape'", source, name);
  if (!shape_it->is_array()) fail("{}: tensor '{}': 'shape' must be an array", source, name);
  // The element count is accumulated in size_t with overflow checks: a crafted shape must not wrap around to
  // match a small byte range.
  size_t numel = 1;
  bool overflow = false;
  for (const auto& dim : *shape_it) {
    size_t d = non_negative_integer(dim, source, fmt::format("tensor '{}': shape dimension", name));
    info.shape.push_back(int64_t(d));
    overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
  }
  size_t expected_bytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype_size(info.dtype), &expected_bytes);

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) fail("{}: tensor '{}': missing 'data_offsets'", source, name);
  if (!offsets_it->is_array() || offsets_it->size() != 2) {
    fail("{}: tensor '{}': 'data_offsets' must be an array [begin, end]", source, name);
  }
  size_t begin = non_negative_integer((*offsets_it)[0], source, fmt::format("tensor '{}': data_offsets begin", name));
  size_t end = non_negative_integer((*offsets_it)[1], source, fmt::format("tensor '{}': data_offsets end", name));
  if (begin > end) fail("{}: tensor '{}': data_offsets begin {} > end {}", source, name, begin, end);
  if (overflow || expected_bytes != end - begin) {
    fail("{}: tensor '{}': shape [{}] of {} needs {} bytes but data_offsets [{}, {}] hold {}", source, name,
         fmt::join(info.shape, ", "), dtype_name(info.dtype),
         overflow ? std::string("too many") : fmt::to_string(expected_bytes), begin, end, end - begin);
  }
  info.offset = begin;
  info.nbytes = end - begin;
  return info;
}

std::map<std::string, std::string> parse_metadata(const nlohmann::json& value, const std::string& source) {
  std::map<std::string, std::string> metadata;
  if (value.is_null()) return metadata;
  if (!value.is_object()) fail("{}: '__metadata__' must be an object of strings", source);
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string())
      fail("{}: '__metadata__' entry '{}' must be a string, got {}", source, key, item.type_name());
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

// Tensors must not share bytes; a zero-sized tensor owns no bytes and may sit anywhere in bounds.
void check_no_overlap(const std::map<std::string, TensorInfo>& tensors, const std::string& source) {
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, info] : tensors) {
    if (info.nbytes > 0) by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& previous = *by_offset[i - 1];
    const TensorInfo& current = *by_offset[i];
    if (current.offset < previous.offset + previous.nbytes) {
      fail("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", source, previous.name, previous.offset,
           previous.offset + previous.nbytes, current.name, current.offset, current.offset + current.nbytes);
    }
  }
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

SafetensorsHeader parse_safetensors(const unsigned char* bytes, size_t size, const std::string& source) {
  if (size < 8) fail("{}: too small for a safetensors file ({} bytes, need at least 8)", source, size);
  uint64_t header_size = read_u64_le(bytes);
  if (header_size > kMaxHeaderBytes) {
    fail("{}: header length {} exceeds the 100 MB limit (not a safetensors file?)", source, header_size);
  }
  if (header_size > size - 8) {
    fail("{}: header length {} exceeds file size {} (truncated file?)", source, header_size, size);
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_size);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON: {}", source, e.what());
  }
  if (!header.is_object()) fail("{}: header must be a JSON object, got {}", source, header.type_name());

  SafetensorsHeader result;
  result.data_start = 8 + size_t(header_size);
  size_t data_size = size - result.data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      result.metadata = parse_metadata(entry, source);
      continue;
    }
    TensorInfo info = parse_tensor_entry(name, entry, source);
    if (info.offset + info.nbytes > data_size) {
      fail("{}: tensor '{}' extends past end of file (data_offsets end {} > data size {})", source, name,
           info.offset + info.nbytes, data_size);
    }
    info.data = bytes + result.data_start + info.offset;
    result.tensors.emplace(name, std::move(info));
  }
  check_no_overlap(result.tensors, source);
  return result;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(path), header_(parse_safetensors(file_.data(), file_.size(), path)) {}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoint: one file or a sharded set.

namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

nlohmann::json read_index(const std::string& index_path) {
  std::string text = read_text_file(index_path);
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", index_path, e.what());
  }
  if (!index.is_object()) fail("{}: must be a JSON object", index_path);
  auto map_it = index.find("weight_map");
  if (map_it == index.end()) fail("{}: missing 'weight_map'", index_path);
  if (!map_it->is_object()) fail("{}: 'weight_map' must be an object of tensor name -> shard file", index_path);
  return std::move(*map_it);
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& model_dir) {
  std::error_code ec;
  if (!fs::exists(model_dir, ec)) fail("{}: no such directory", model_dir);
  if (!fs::is_directory(model_dir, ec)) fail("{}: not a directory", model_dir);

  Checkpoint checkpoint;
  checkpoint.dir_ = model_dir;
  fs::path dir(model_dir);
  // Like transformers' from_pretrained, a single model.safetensors wins over an index.
  std::string single_path = (dir / kSingleFile).string();
  std::string index_path = (dir / kIndexFile).string();
  if (fs::is_regular_file(single_path, ec)) {
    checkpoint.files_.push_back(std::make_unique<SafetensorsFile>(single_path));
    for (const auto& [name, info] : checkpoint.files_.back()->tensors()) checkpoint.index_[name] = &info;
    return checkpoint;
  }
  if (!fs::is_regular_file(index_path, ec)) {
    fail("{}: no checkpoint found (looked for {} and {})", model_dir, kSingleFile, kIndexFile);
  }

  nlohmann::json weight_map = read_index(index_path);
  std::map<std::string, SafetensorsFile*> shards;  // each shard opened once, however many tensors name it
  for (const auto& [tensor, shard_value] : weight_map.items()) {
    if (!shard_value.is_string()) fail("{}: weight_map entry for '{}' must be a file name", index_path, tensor);
    const auto& shard = shard_value.get_ref<const std::string&>();
    // Shards live beside the index; a path that leaves the directory is a broken (or hostile) index.
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      fail("{}: weight_map entry for '{}' names '{}', which is not a file name in the directory", index_path, tensor,
           shard);
    }
    auto shard_it = shards.find(shard);
    if (shard_it == shards.end()) {
      std::string shard_path = (dir / shard).string();
      if (!fs::is_regular_file(shard_path, ec)) {
        fail("{}: shard '{}' listed in the index is missing ({})", index_path, shard, shard_path);
      }
      checkpoint.files_.push_back(std::make_unique<SafetensorsFile>(shard_path));
      shard_it = shards.emplace(shard, checkpoint.files_.back().get()).first;
    }
    const auto& shard_tensors = shard_it->second->tensors();
    auto tensor_it = shard_tensors.find(tensor);
    if (tensor_it == shard_tensors.end()) {
      fail("{}: tensor '{}' is listed for shard '{}' but that shard does not contain it", index_path, tensor, shard);
    }
    checkpoint.index_[tensor] = &tensor_it->second;
  }
  // transformers loads every tensor of every listed shard, not only those the weight_map names; so do we (a
  // weight_map entry still decides which shard a duplicated name comes from).
  for (const auto& file : checkpoint.files_) {
    for (const auto& [name, info] : file->tensors()) checkpoint.index_.emplace(name, &info);
  }
  return checkpoint;
}

Checkpoint Checkpoint::from_memory(const std::string& label, std::vector<TensorInfo> tensors) {
  Checkpoint checkpoint;
  checkpoint.dir_ = label;
  for (TensorInfo& tensor : tensors) {
    std::string name = tensor.name;
    const auto [it, inserted] = checkpoint.memory_.emplace(name, std::move(tensor));
    if (!inserted) fail("{}: tensor '{}' given twice", label, name);
    checkpoint.index_[name] = &it->second;
  }
  return checkpoint;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) fail("{}: tensor '{}' not found in checkpoint", dir_, name);
  return *info;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> result;
  result.reserve(index_.size());
  for (const auto& [name, info] : index_) result.push_back(name);
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Writer.

SafetensorsLayout plan_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                                   const std::map<std::string, std::string>& metadata) {
  // Same data order as huggingface/safetensors: larger element types first (keeps every tensor aligned to its
  // element size), then by name.
  std::vector<size_t> order;
  std::set<std::string> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& tensor = tensors[i];
    if (tensor.name.empty() || tensor.name == "__metadata__") fail("{}: invalid tensor name '{}'", path, tensor.name);
    if (!seen.insert(tensor.name).second) fail("{}: tensor '{}' given twice", path, tensor.name);
    order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    size_t size_a = dtype_size(tensors[a].dtype), size_b = dtype_size(tensors[b].dtype);
    return size_a != size_b ? size_a > size_b : tensors[a].name < tensors[b].name;
  });

  SafetensorsLayout layout;
  layout.offsets.resize(tensors.size());
  layout.sizes.resize(tensors.size());
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (size_t i : order) {
    const TensorToWrite& tensor = tensors[i];
    size_t bytes = dtype_size(tensor.dtype);
    for (int64_t dim : tensor.shape) {
      if (dim < 0) fail("{}: tensor '{}' has negative dimension {}", path, tensor.name, dim);
      if (__builtin_mul_overflow(bytes, size_t(dim), &bytes)) fail("{}: tensor '{}' is too large", path, tensor.name);
    }
    header[tensor.name] = {{"dtype", std::string(dtype_name(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + bytes}}};
    layout.offsets[i] = offset;
    layout.sizes[i] = bytes;
    offset += bytes;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::type_error&) {
    fail("{}: tensor names and metadata must be valid UTF-8", path);
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t header_size = header_text.size();
  for (int i = 0; i < 8; ++i) layout.head.push_back(static_cast<char>(header_size >> (8 * i)));
  layout.head += header_text;
  for (size_t& o : layout.offsets) o += layout.head.size();
  layout.file_size = layout.head.size() + offset;
  return layout;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const SafetensorsLayout layout = plan_safetensors(path, tensors, metadata);
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) {
    order[i] = i;
    if (layout.sizes[i] > 0 && !tensors[i].data) fail("{}: tensor '{}' has no data", path, tensors[i].name);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return layout.offsets[a] < layout.offsets[b]; });

  // Write beside the target and rename, so a crash never leaves a truncated file under the real name.
  std::string temp_path = path + ".tmp";
  {
    std::ofstream out(temp_path, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot open for writing: {}", temp_path, std::strerror(errno));
    out.write(layout.head.data(), std::streamsize(layout.head.size()));
    for (size_t i : order) {
      if (layout.sizes[i] > 0) out.write(static_cast<const char*>(tensors[i].data), std::streamsize(layout.sizes[i]));
    }
    out.close();
    if (!out) fail("{}: write failed: {}", temp_path, std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(temp_path, path, ec);
  if (ec) fail("{}: cannot rename {} into place: {}", path, temp_path, ec.message());
}

}  // namespace qed
