// qed inspect --model DIR: what qed reads from a model directory (config summary, tensor list) as JSON.
// A debugging aid, hidden from --help; --save rewrites the tensors as one file (e.g. to merge shards). The interop
// tests use it to check files written by HF's safetensors, and HF's reader on files we write.
#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace qed::cli {

namespace {

using ordered_json = nlohmann::ordered_json;

ordered_json config_summary(const ModelConfig& c) {
  ordered_json rope_scaling = {{"type", c.rope_scaling.type}};
  if (c.rope_scaling.type != "default") {
    rope_scaling["factor"] = c.rope_scaling.factor;
    rope_scaling["low_freq_factor"] = c.rope_scaling.low_freq_factor;
    rope_scaling["high_freq_factor"] = c.rope_scaling.high_freq_factor;
    rope_scaling["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
  }
  return {{"model_type", c.model_type},
          {"hidden_size", c.hidden_size},
          {"num_layers", c.num_layers},
          {"num_heads", c.num_heads},
          {"num_kv_heads", c.num_kv_heads},
          {"head_dim", c.head_dim},
          {"intermediate_size", c.intermediate_size},
          {"vocab_size", c.vocab_size},
          {"max_position_embeddings", c.max_position_embeddings},
          {"rms_norm_eps", c.rms_norm_eps},
          {"rope_theta", c.rope_theta},
          {"rope_scaling", rope_scaling},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"attention_bias", c.attention_bias},
          {"mlp_bias", c.mlp_bias},
          {"dtype", std::string(dtype_name(c.dtype))},
          {"bos_token_id", c.bos_token_id},
          {"eos_token_ids", c.eos_token_ids}};
}

// Element values in row-major order: integers exactly, floating types widened to float (NaN/inf print as null).
ordered_json tensor_values(const TensorInfo& t) {
  ordered_json values = ordered_json::array();
  size_t count = size_t(t.numel());
  for (size_t i = 0; i < count; ++i) {
    switch (t.dtype) {
      case DType::I64: {
        int64_t v;
        std::memcpy(&v, t.data + i * 8, 8);
        values.push_back(v);
        break;
      }
      case DType::I32: {
        int32_t v;
        std::memcpy(&v, t.data + i * 4, 4);
        values.push_back(v);
        break;
      }
      case DType::I8:
        values.push_back(int(static_cast<int8_t>(t.data[i])));
        break;
      case DType::U8:
        values.push_back(int(t.data[i]));
        break;
      default:
        values.push_back(t.at(i));
    }
  }
  return values;
}

struct InspectOptions {
  std::string model_dir;
  std::vector<std::string> only;  // tensor names; empty = all
  bool with_values = false;
  std::string save_path;  // when set, also write the selected tensors into one safetensors file
};

void inspect(const InspectOptions& options) {
  const std::string& model_dir = options.model_dir;
  ordered_json out;
  out["model_dir"] = model_dir;
  std::string config_path = (std::filesystem::path(model_dir) / "config.json").string();
  std::error_code ec;
  // A directory of bare tensors (no config.json) is still worth listing.
  out["config"] = std::filesystem::exists(config_path, ec) ? config_summary(ModelConfig::from_file(config_path))
                                                           : ordered_json(nullptr);
  Checkpoint checkpoint = Checkpoint::open(model_dir);
  std::vector<std::string> names = options.only.empty() ? checkpoint.names() : options.only;
  std::vector<TensorToWrite> to_save;
  ordered_json tensors = ordered_json::array();
  size_t total_bytes = 0;
  for (const auto& name : names) {
    const TensorInfo& t = checkpoint.get(name);
    ordered_json item = {{"name", name}, {"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}};
    item["nbytes"] = t.nbytes;
    if (options.with_values) item["values"] = tensor_values(t);
    to_save.push_back({name, t.dtype, t.shape, t.data});
    total_bytes += t.nbytes;
    tensors.push_back(std::move(item));
  }
  out["num_tensors"] = tensors.size();
  out["total_bytes"] = total_bytes;
  if (!options.save_path.empty()) {
    write_safetensors(options.save_path, to_save);
    out["saved_to"] = options.save_path;
  }
  // Pretty-printed, except one line per tensor: a 14B checkpoint lists ~580 tensors.
  auto dump = [](const ordered_json& value, int indent) {
    return value.dump(indent, ' ', false, ordered_json::error_handler_t::replace);
  };
  std::string text = dump(out, 2);
  text.resize(text.rfind('}'));
  while (!text.empty() && text.back() == '\n') text.pop_back();
  text += ",\n  \"tensors\": [";
  for (size_t i = 0; i < tensors.size(); ++i) text += (i ? ",\n    " : "\n    ") + dump(tensors[i], -1);
  text += tensors.empty() ? "]\n}" : "\n  ]\n}";
  fmt::print("{}\n", text);
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Print a model directory's config summary and tensor list as JSON");
  cmd->group("");  // debugging aid: hidden from `qed --help`
  auto options = std::make_shared<InspectOptions>();
  cmd->add_option("--model", options->model_dir, "Model directory (config.json + safetensors)")->required();
  cmd->add_option("--tensor", options->only, "Only these tensors (repeatable)");
  cmd->add_flag("--values", options->with_values, "Also print every element's value");
  cmd->add_option("--save", options->save_path, "Write the (selected) tensors into one safetensors file");
  cmd->callback([options] { inspect(*options); });
}

}  // namespace qed::cli
