// qed train-drafter: trains a ReDrafter draft head for a model on the CPU or a GPU (src/train/drafter_trainer.h).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <memory>

#include "cli/commands.h"
#include "train/drafter_trainer.h"

namespace qed::cli {

void register_train_drafter(CLI::App& app) {
  auto opt = std::make_shared<train::TrainDrafterOptions>();
  auto quiet = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("train-drafter", "Train a ReDrafter draft head on a frozen model (CPU fp32, or CUDA)");
  cmd->add_option("--model", opt->model_dir, "Base model directory (config.json, *.safetensors, tokenizer.json)")
      ->required();
  cmd->add_option("--data", opt->data_path,
                  "Training jsonl: rows with input_ids[+labels], text, or problem + generated_solution/solution/"
                  "tir_solution")
      ->required();
  cmd->add_option("--out", opt->out_dir, "Output directory (the head, metrics.jsonl, checkpoint/)")->required();
  cmd->add_option("--n-tokens", opt->n_tokens, "Tokens the head learns to predict (RD drafter_predict_n_tokens)")
      ->capture_default_str();
  cmd->add_option("--layers", opt->num_layers, "Residual blocks of the head (RD drafter_num_layers)")
      ->capture_default_str();
  cmd->add_option("--rnn", opt->rnn, "Recurrent state update (true) or a cumulative sum (false)")
      ->capture_default_str();
  cmd->add_option("--exit-dim", opt->exit_dim, "Head width; 0 = 2 × hidden (no input projection)")
      ->capture_default_str();
  cmd->add_option("--lr", opt->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--warmup-ratio", opt->warmup_ratio, "Fraction of the steps with a linear warmup")
      ->capture_default_str();
  cmd->add_option("--weight-decay", opt->weight_decay, "AdamW decoupled weight decay (weights, not biases)")
      ->capture_default_str();
  cmd->add_option("--max-grad-norm", opt->max_grad_norm, "Gradient clipping by global norm; 0 = off")
      ->capture_default_str();
  cmd->add_option("--epochs", opt->epochs, "Passes over the data")->capture_default_str();
  cmd->add_option("--max-steps", opt->max_steps, "Optimizer steps; 0 = as many as --epochs take")
      ->capture_default_str();
  cmd->add_option("--max-len", opt->max_len, "Tokens per sequence at most")->capture_default_str();
  cmd->add_option("--rows", opt->rows, "Rows of --data used at most")->capture_default_str();
  cmd->add_option("--batch", opt->batch, "Sequences per micro-batch (one base-model forward)")->capture_default_str();
  cmd->add_option("--grad-accum", opt->grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  cmd->add_option("--top-k", opt->top_k, "Logged accuracies redrafter{i}_top1..top{k}")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Seed of the initialisation and the data order")->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU threads (0 = all)")->capture_default_str();
  cmd->add_option("--backend", opt->backend,
                  "cpu (fp32) or cuda (base model on the CUDA backend; head: bf16 GEMMs, fp32 master weights)")
      ->capture_default_str();
  cmd->add_option("--gpu-device", opt->gpu_device, "CUDA device index (--backend cuda)")->capture_default_str();
  cmd->add_option("--gpu-memory-fraction", opt->gpu_memory_fraction,
                  "Share of GPU memory the run may hold: base model, its KV cache (sized for one micro-batch) and the "
                  "head's buffers (--backend cuda)")
      ->capture_default_str();
  cmd->add_option("--logits-chunk-rows", opt->logits_chunk_rows,
                  "Rows per vocab-projection pass on the GPU (0 = about 1 GiB of logits)")
      ->capture_default_str();
  cmd->add_option("--save-every", opt->save_every, "Steps between checkpoints")->capture_default_str();
  cmd->add_option("--log-every", opt->log_every, "Steps between metrics.jsonl lines")->capture_default_str();
  cmd->add_flag("--resume", opt->resume, "Continue from --out's checkpoint (same flags and data)");
  cmd->add_flag("--quiet", *quiet, "No progress bar");
  cmd->callback([opt, quiet] {
    opt->progress = !*quiet;
    const train::TrainDrafterResult result = train::train_drafter(*opt);
    if (!*quiet) {
      fmt::print(stderr, "wrote {} after {} steps (loss {:.4f})\n", opt->out_dir, result.steps,
                 result.last.total_loss());
    }
  });
}

}  // namespace qed::cli
