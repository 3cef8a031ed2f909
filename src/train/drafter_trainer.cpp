#include "train/drafter_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "train/adamw.h"
#include "train/base_hidden.h"
#include "train/drafter_data.h"
#include "train/head_step.h"

namespace qed::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using spec::RedrafterHead;

void validate(const TrainDrafterOptions& o) {
  if (o.model_dir.empty() || o.data_path.empty() || o.out_dir.empty())
    fail("train-drafter needs --model, --data and --out");
  if (!fs::is_regular_file(o.model_dir + "/config.json"))
    fail("{}: no config.json (not a model directory)", o.model_dir);
  if (o.n_tokens < 1 || o.n_tokens > 16) fail("--n-tokens must be in [1, 16], got {}", o.n_tokens);
  if (o.num_layers < 0 || o.num_layers > 16) fail("--layers must be in [0, 16], got {}", o.num_layers);
  if (o.exit_dim < 0) fail("--exit-dim must be >= 0 (0 = 2 × hidden), got {}", o.exit_dim);
  if (!(o.lr > 0.0) || !std::isfinite(o.lr)) fail("--lr must be a positive number, got {}", o.lr);
  if (!(o.warmup_ratio >= 0.0 && o.warmup_ratio <= 1.0))
    fail("--warmup-ratio must be in [0, 1], got {}", o.warmup_ratio);
  if (!(o.weight_decay >= 0.0)) fail("--weight-decay must be >= 0, got {}", o.weight_decay);
  if (!(o.max_grad_norm >= 0.0)) fail("--max-grad-norm must be >= 0, got {}", o.max_grad_norm);
  if (o.epochs < 1) fail("--epochs must be >= 1, got {}", o.epochs);
  if (o.batch < 1) fail("--batch must be >= 1, got {}", o.batch);
  if (o.grad_accum < 1) fail("--grad-accum must be >= 1, got {}", o.grad_accum);
  if (o.top_k < 1) fail("--top-k must be >= 1, got {}", o.top_k);
  if (o.max_steps < 0 || o.stop_after < 0) fail("--max-steps must be >= 0, got {}", o.max_steps);
  if (o.save_every < 1 || o.log_every < 1) fail("--save-every and --log-every must be >= 1");
  if (o.threads < 0) fail("--threads must be >= 0, got {}", o.threads);
  if (o.backend != "cpu" && o.backend != "cuda") fail("--backend must be cpu or cuda, got '{}'", o.backend);
  if (!(o.gpu_memory_fraction > 0.0f && o.gpu_memory_fraction <= 1.0f))
    fail("--gpu-memory-fraction must be in (0, 1], got {}", o.gpu_memory_fraction);
  if (o.gpu_device < 0) fail("--gpu-device must be >= 0, got {}", o.gpu_device);
  if (o.logits_chunk_rows < 0) fail("--logits-chunk-rows must be >= 0, got {}", o.logits_chunk_rows);
}

// The options that decide the trajectory: a resumed run must have the same ones.
json trajectory_fingerprint(const TrainDrafterOptions& o, int64_t total_steps, size_t examples) {
  return {{"model", fs::weakly_canonical(o.model_dir).string()},
          {"data", fs::weakly_canonical(o.data_path).string()},
          {"data_bytes", fs::file_size(o.data_path)},
          {"examples", examples},
          {"n_tokens", o.n_tokens},
          {"layers", o.num_layers},
          {"rnn", o.rnn},
          {"exit_dim", o.exit_dim},
          {"lr", o.lr},
          {"warmup_ratio", o.warmup_ratio},
          {"weight_decay", o.weight_decay},
          {"max_grad_norm", o.max_grad_norm},
          {"epochs", o.epochs},
          {"max_len", o.max_len},
          {"rows", o.rows},
          {"batch", o.batch},
          {"grad_accum", o.grad_accum},
          {"seed", o.seed},
          {"total_steps", total_steps}};
}

}  // namespace

// torch.nn.Linear's default initialisation (kaiming_uniform with a = √5): weight and bias U(−1/√in, 1/√in).
RedrafterHead initial_head(const spec::RedrafterConfig& config, uint64_t seed) {
  RedrafterHead head(config);
  std::mt19937_64 rng(seed);
  for (auto& [name, linear] : head.linears()) {
    const float bound = 1.0f / std::sqrt(float(linear->in));
    std::uniform_real_distribution<float> dist(-bound, bound);
    for (float& w : linear->weight) w = dist(rng);
    for (float& b : linear->bias) b = dist(rng);
  }
  return head;
}

namespace {

// The examples' order in `epoch`: a Fisher–Yates shuffle from (seed, epoch), the same on every platform.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) + 1);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[size_t(rng() % i)]);
  return order;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) fail("{}: cannot write", path.string());
}

// checkpoint/ is written beside as checkpoint.tmp and swapped in, so a kill mid-save leaves the previous one.
void save_checkpoint(const fs::path& out, const RedrafterHead& head, AdamW& adam, const HeadTensors& tensors,
                     const json& state) {
  const fs::path tmp = out / "checkpoint.tmp", dst = out / "checkpoint", old = out / "checkpoint.old";
  fs::remove_all(tmp);
  head.save(tmp.string());
  std::vector<TensorToWrite> moments;
  for (size_t k = 0; k < tensors.names.size(); ++k) {
    const int64_t size = int64_t(tensors.sizes[k]);
    moments.push_back({"exp_avg." + tensors.names[k], DType::F32, {size}, adam.first_moment(k).data()});
    moments.push_back({"exp_avg_sq." + tensors.names[k], DType::F32, {size}, adam.second_moment(k).data()});
  }
  write_safetensors((tmp / "optimizer.safetensors").string(), moments, {{"format", "pt"}});
  write_text(tmp / "trainer_state.json", state.dump(2) + "\n");
  fs::remove_all(old);
  if (fs::exists(dst)) fs::rename(dst, old);
  fs::rename(tmp, dst);
  fs::remove_all(old);
}

fs::path checkpoint_dir(const fs::path& out) {
  if (fs::is_directory(out / "checkpoint")) return out / "checkpoint";
  if (fs::is_directory(out / "checkpoint.old")) return out / "checkpoint.old";  // killed mid-swap
  return {};
}

int64_t load_checkpoint(const fs::path& dir, const json& fingerprint, RedrafterHead& head, AdamW& adam,
                        const HeadTensors& tensors) {
  std::ifstream in(dir / "trainer_state.json");
  if (!in) fail("{}: no trainer_state.json", dir.string());
  json state;
  try {
    state = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}/trainer_state.json: {}", dir.string(), e.what());
  }
  const json& saved = state.at("run");
  for (const auto& [key, value] : fingerprint.items()) {
    if (!saved.contains(key) || saved.at(key) != value) {
      fail("--resume: {} was {} in the checkpoint, now {} (resume with the same flags and data)", key,
           saved.contains(key) ? saved.at(key).dump() : "absent", value.dump());
    }
  }
  const RedrafterHead loaded = RedrafterHead::load(dir.string());
  const auto from = loaded.linears();
  auto to = head.linears();
  for (size_t k = 0; k < to.size(); ++k) *to[k].second = *from[k].second;
  const SafetensorsFile moments((dir / "optimizer.safetensors").string());
  auto moment = [&](const std::string& name) {
    auto it = moments.tensors().find(name);
    if (it == moments.tensors().end()) fail("{}/optimizer.safetensors: no tensor '{}'", dir.string(), name);
    return tensor_to_f32(it->second);
  };
  for (size_t k = 0; k < tensors.names.size(); ++k) {
    adam.first_moment(k) = moment("exp_avg." + tensors.names[k]);
    adam.second_moment(k) = moment("exp_avg_sq." + tensors.names[k]);
    if (adam.first_moment(k).size() != tensors.sizes[k] || adam.second_moment(k).size() != tensors.sizes[k]) {
      fail("{}: optimizer state of '{}' has the wrong size", dir.string(), tensors.names[k]);
    }
  }
  const int64_t step = state.at("step").get<int64_t>();
  adam.set_steps(step);
  return step;
}

// Keeps the metrics lines up to `step`: a resumed run logs the later ones again.
void truncate_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (json::parse(line).at("step").get<int64_t>() <= step) kept += line + "\n";
    } catch (const json::exception&) {
      // a line cut by the kill
    }
  }
  in.close();
  write_text(path, kept);
}

struct StepMetrics {
  std::vector<double> loss_sum;
  std::vector<int64_t> targets;
  std::vector<std::vector<int64_t>> hits;
  int micro = 0;
  void add(const DraftMetrics& m) {
    if (loss_sum.empty()) {
      loss_sum.assign(m.loss.size(), 0.0);
      targets.assign(m.loss.size(), 0);
      hits = m.hits;
      for (auto& h : hits) std::fill(h.begin(), h.end(), 0);
    }
    for (size_t i = 0; i < m.loss.size(); ++i) {
      loss_sum[i] += m.loss[i];
      targets[i] += m.targets[i];
      for (size_t k = 0; k < m.hits[i].size(); ++k) hits[i][k] += m.hits[i][k];
    }
    ++micro;
  }
  DraftMetrics mean() const {
    DraftMetrics m;
    m.top_k = hits.empty() ? 0 : int(hits[0].size());
    for (double l : loss_sum) m.loss.push_back(micro > 0 ? l / micro : 0.0);
    m.targets = targets;
    m.hits = hits;
    return m;
  }
};

json metrics_json(const DraftMetrics& m) {
  json j;
  j["loss"] = m.total_loss();
  for (size_t i = 0; i < m.loss.size(); ++i) {
    j[fmt::format("redrafter{}_loss", i)] = m.loss[i];
    for (size_t k = 0; k < m.hits[i].size(); ++k) {
      j[fmt::format("redrafter{}_top{}", i, k + 1)] =
          m.targets[i] > 0 ? double(m.hits[i][k]) / double(m.targets[i]) : 0.0;
    }
  }
  return j;
}

void print_progress(int64_t step, int64_t total, const DraftMetrics& m, double lr, double tokens_per_s) {
  constexpr int kWidth = 30;
  const int filled = total > 0 ? int(step * kWidth / total) : kWidth;
  const double top1 =
      !m.targets.empty() && m.targets[0] > 0 && !m.hits[0].empty() ? double(m.hits[0][0]) / double(m.targets[0]) : 0.0;
  fmt::print(stderr, "\rtrain-drafter [{:=<{}}{:<{}}] step {}/{} loss {:.4f} top1 {:.3f} lr {:.2e} {:.0f} tok/s ", "",
             filled, "", kWidth - filled, step, total, m.total_loss(), top1, lr, tokens_per_s);
  if (step == total) fmt::print(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace

TrainDrafterResult train_drafter(const TrainDrafterOptions& options) {
  validate(options);
  const fs::path out = options.out_dir;
  const fs::path existing = checkpoint_dir(out);
  if (!options.resume && !existing.empty()) {
    fail("{}: holds a checkpoint; pass --resume to continue it or choose another --out", out.string());
  }
  if (options.resume && existing.empty()) fail("--resume: {} has no checkpoint", out.string());

  const ModelConfig model_config = ModelConfig::from_file(options.model_dir + "/config.json");
  DrafterDataOptions data_options;
  data_options.path = options.data_path;
  data_options.max_len = options.max_len;
  data_options.rows = options.rows;
  data_options.vocab_size = model_config.vocab_size;
  const std::vector<Example> examples = load_drafter_examples(data_options, options.model_dir);
  size_t longest = 0;
  for (const Example& e : examples) longest = std::max(longest, e.ids.size());

  spec::RedrafterConfig head_config;
  head_config.vocab_size = model_config.vocab_size;
  head_config.hidden_size = model_config.hidden_size;
  head_config.exit_dim = options.exit_dim > 0 ? options.exit_dim : 2 * model_config.hidden_size;
  head_config.num_draft_layers = options.num_layers;
  head_config.rnn = options.rnn;

  const size_t micro_per_epoch = (examples.size() + size_t(options.batch) - 1) / size_t(options.batch);
  const int64_t steps_per_epoch =
      int64_t((micro_per_epoch + size_t(options.grad_accum) - 1) / size_t(options.grad_accum));
  const int64_t total_steps = options.max_steps > 0 ? options.max_steps : steps_per_epoch * options.epochs;
  const int64_t warmup = warmup_steps(options.warmup_ratio, total_steps);
  const json fingerprint = trajectory_fingerprint(options, total_steps, examples.size());

  BaseHiddenStates::Options base_options;
  base_options.backend = options.backend;
  base_options.num_threads = options.threads;
  base_options.gpu_device = options.gpu_device;
  base_options.gpu_memory_fraction = options.gpu_memory_fraction;
  BaseHiddenStates base(options.model_dir, base_options, size_t(options.batch), longest);
  ThreadPool pool(size_t(options.backend == "cpu" ? options.threads : 1));
  RedrafterHead head = initial_head(head_config, options.seed);
  const HeadTensors tensors = head_tensors(head);
  const AdamWConfig adam_config{.weight_decay = options.weight_decay};
  AdamW adam(adam_config, tensors.sizes, tensors.decays);

  fs::create_directories(out);
  int64_t step = 0;
  if (options.resume) {
    step = load_checkpoint(existing, fingerprint, head, adam, tensors);
    truncate_metrics(out / "metrics.jsonl", step);
  } else {
    fs::remove(out / "metrics.jsonl");
  }
  HeadStepContext step_context{&head, &adam, adam_config, base.embeddings(), options.top_k};
  std::unique_ptr<HeadStep> head_step;
  if (options.backend == "cuda") {
    head_step = make_cuda_head_step(step_context, {.device = options.gpu_device,
                                                   .logits_chunk_rows = options.logits_chunk_rows,
                                                   .memory_fraction = options.gpu_memory_fraction});
  } else {
    head_step = make_cpu_head_step(step_context, &pool);
  }
  json args = fingerprint;
  args["top_k"] = options.top_k;
  write_text(out / "train_args.json", args.dump(2) + "\n");
  std::ofstream metrics_log(out / "metrics.jsonl", std::ios::app);
  if (!metrics_log) fail("{}: cannot write", (out / "metrics.jsonl").string());

  TrainDrafterResult result;
  result.total_steps = total_steps;
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens_seen = 0;
  double base_seconds = 0.0, head_seconds = 0.0;  // where the time goes: the base forward, the head step
  int64_t cached_epoch = -1;
  std::vector<size_t> order;
  auto state_json = [&](int64_t at) {
    return json{{"step", at}, {"epoch", double(at) / double(steps_per_epoch)}, {"run", fingerprint}};
  };
  while (step < total_steps) {
    if (options.stop_after > 0 && step >= options.stop_after) break;
    const int64_t epoch = step / steps_per_epoch, in_epoch = step % steps_per_epoch;
    if (epoch != cached_epoch) {
      order = epoch_order(examples.size(), options.seed, epoch);
      cached_epoch = epoch;
    }
    const size_t first_micro = size_t(in_epoch) * size_t(options.grad_accum);
    const size_t end_micro = std::min(micro_per_epoch, first_micro + size_t(options.grad_accum));
    head_step->zero_grads();
    StepMetrics step_metrics;
    for (size_t micro = first_micro; micro < end_micro; ++micro) {
      std::vector<const Example*> batch;
      std::vector<std::vector<int32_t>> positions;
      for (size_t k = micro * size_t(options.batch); k < std::min(examples.size(), (micro + 1) * size_t(options.batch));
           ++k) {
        batch.push_back(&examples[order[k]]);
        positions.push_back(draft_positions(*batch.back(), options.n_tokens));
        tokens_seen += int64_t(batch.back()->ids.size());
      }
      std::vector<float> hidden;
      const auto base_start = std::chrono::steady_clock::now();
      base.compute(batch, positions, hidden);
      const auto head_start = std::chrono::steady_clock::now();
      base_seconds += std::chrono::duration<double>(head_start - base_start).count();
      DraftRows rows;
      rows.n_tokens = options.n_tokens;
      size_t offset = 0;
      const size_t h = size_t(head_config.hidden_size);
      for (size_t k = 0; k < batch.size(); ++k) {
        const std::span<const float> rows_hidden(hidden.data() + offset * h, positions[k].size() * h);
        append_draft_rows(*batch[k], positions[k], rows_hidden, head_config.hidden_size, rows);
        offset += positions[k].size();
      }
      const float scale = 1.0f / float(end_micro - first_micro);
      step_metrics.add(head_step->accumulate(rows, scale));
      head_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - head_start).count();
    }
    const double lr = cosine_lr(options.lr, step, warmup, total_steps);
    const auto apply_start = std::chrono::steady_clock::now();
    const double grad_norm = head_step->apply(lr, options.max_grad_norm);
    head_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - apply_start).count();
    ++step;
    result.last = step_metrics.mean();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step % options.log_every == 0 || step == total_steps) {
      json line = metrics_json(result.last);
      line["step"] = step;
      line["epoch"] = double(step) / double(steps_per_epoch);
      line["lr"] = lr;
      line["grad_norm"] = grad_norm;
      line["elapsed_s"] = elapsed;
      line["base_forward_s"] = base_seconds;
      line["head_s"] = head_seconds;
      line["tokens"] = tokens_seen;
      metrics_log << line.dump() << "\n" << std::flush;
    }
    if (step % options.save_every == 0 || step == total_steps) {
      head_step->sync_to_host();
      save_checkpoint(out, head, adam, tensors, state_json(step));
    }
    if (options.progress)
      print_progress(step, total_steps, result.last, lr, elapsed > 0 ? double(tokens_seen) / elapsed : 0.0);
  }
  // Stopped early (tests): like a kill, only the last periodic checkpoint remains.
  if (step == total_steps) {
    head_step->sync_to_host();
    head.save(out.string());
  }
  result.steps = step;
  return result;
}

}  // namespace qed::train
