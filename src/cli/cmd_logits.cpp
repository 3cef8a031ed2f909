// qed logits: fp32 logits at every prompt position from the CPU reference backend (or, --backend cuda, the CUDA
// backend), written as safetensors (tensor "logits", [n_tokens, vocab]), for comparisons with other
// implementations.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "backend/factory/backend_factory.h"
#include "cli/commands.h"
#include "cli/prompt_ids.h"
#include "core/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace qed::cli {
namespace {

struct LogitsOptions {
  std::string model;
  std::string prompt_ids;
  std::string out;
  int threads = 0;
  std::string backend = "cpu";
};

void run_logits(const LogitsOptions& opt) {
  const std::vector<int32_t> ids = parse_prompt_ids(opt.prompt_ids);
  const ModelConfig config = ModelConfig::from_file(opt.model + "/config.json");
  for (int32_t id : ids) {
    if (id >= config.vocab_size)
      fail("prompt token id {} is outside the model's vocabulary [0, {})", id, config.vocab_size);
  }
  BackendSelection selection;
  selection.kind = opt.backend;
  selection.threads = opt.threads;
  selection.num_blocks = int((ids.size() + size_t(selection.block_size) - 1) / size_t(selection.block_size));
  selection.max_batched_tokens = std::max(selection.max_batched_tokens, int(ids.size()));
  selection.cuda_graphs = false;  // one prefill: nothing to replay
  const std::unique_ptr<Backend> backend = make_backend(opt.model, selection);

  ForwardBatch batch;
  SequenceChunk& chunk = batch.sequences.emplace_back();
  chunk.tokens = ids;
  for (int32_t i = 0; i < selection.num_blocks; ++i) chunk.block_table.push_back(i);
  for (int32_t i = 0; i < int32_t(ids.size()); ++i) chunk.logits_indices.push_back(i);
  ForwardResult result;
  backend->forward(batch, result);
  write_safetensors(opt.out,
                    {{"logits", DType::F32, {int64_t(ids.size()), int64_t(config.vocab_size)}, result.logits.data()}},
                    {{"model", opt.model}, {"backend", backend->name()}, {"prompt_ids", opt.prompt_ids}});
}

}  // namespace

void register_logits(CLI::App& app) {
  auto opt = std::make_shared<LogitsOptions>();
  auto* cmd = app.add_subcommand("logits", "Write fp32 logits at every prompt position (CPU reference backend)");
  cmd->add_option("--model", opt->model, "Model directory (config.json, *.safetensors)")->required();
  cmd->add_option("--prompt-ids", opt->prompt_ids, "Prompt as token ids: 1,2,3")->required();
  cmd->add_option("--out", opt->out, "Output .safetensors file (tensor 'logits' [n_tokens, vocab], F32)")->required();
  cmd->add_option("--threads", opt->threads, "CPU threads (0 = all)")->capture_default_str();
  cmd->add_option("--backend", opt->backend, "cpu (the fp32 reference) or cuda")->capture_default_str();
  cmd->callback([opt] { run_logits(*opt); });
}

}  // namespace qed::cli
