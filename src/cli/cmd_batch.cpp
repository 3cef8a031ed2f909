// qed batch: offline generation over a JSONL file through the engine (continuous batching, prefix caching).
// Resumable: rows whose id is already in the output are skipped, and each finished row is appended and fsynced, so
// a killed run loses at most the rows in flight.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "backend/factory/backend_factory.h"
#include "cli/backend_flags.h"
#include "cli/commands.h"
#include "cli/spec_options.h"
#include "core/error.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

namespace qed::cli {
namespace {

struct BatchOptions {
  std::string model_dir;
  std::string input_path;
  std::string output_path;
  int max_batch = 16;
  int max_batched_tokens = 512;
  int threads = 0;
  BackendFlags backend;
  size_t kv_cache_mb = 256;
  int block_size = 16;
  bool no_prefix_cache = false;
  int max_tokens = SamplingParams{}.max_tokens;
  float temperature = SamplingParams{}.temperature;
  std::string stats_path;
  SpecOptions spec;
};

struct InputRow {
  nlohmann::json id;  // string or number, written back as given
  std::string key;    // id.dump(): what resume compares
  std::vector<int32_t> prompt_ids;
  SamplingParams params;
};

// Keys are matched by their JSON text, so 7 and "7" are different ids.
std::string id_key(const nlohmann::json& id) {
  return id.dump();
}

SamplingParams parse_sampling(const nlohmann::json& row, const std::string& where, const BatchOptions& options) {
  SamplingParams p;
  p.max_tokens = options.max_tokens;
  p.temperature = options.temperature;
  try {
    if (row.contains("max_tokens")) p.max_tokens = row["max_tokens"].get<int>();
    if (row.contains("temperature")) p.temperature = row["temperature"].get<float>();
    if (row.contains("top_p")) p.top_p = row["top_p"].get<float>();
    if (row.contains("top_k")) p.top_k = row["top_k"].get<int>();
    if (row.contains("min_p")) p.min_p = row["min_p"].get<float>();
    if (row.contains("repetition_penalty")) p.repetition_penalty = row["repetition_penalty"].get<float>();
    if (row.contains("seed")) p.seed = row["seed"].get<uint64_t>();
    if (row.contains("n")) p.n = row["n"].get<int>();
    if (row.contains("ignore_eos")) p.ignore_eos = row["ignore_eos"].get<bool>();
    if (row.contains("stop")) {
      if (row["stop"].is_string()) {
        p.stop = {row["stop"].get<std::string>()};
      } else {
        p.stop = row["stop"].get<std::vector<std::string>>();
      }
    }
    if (row.contains("stop_token_ids")) p.stop_token_ids = row["stop_token_ids"].get<std::vector<int32_t>>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: bad sampling field: {}", where, e.what());
  }
  return p;
}

std::vector<InputRow> read_input(const BatchOptions& options, const Tokenizer* tokenizer) {
  static const std::set<std::string> known = {
      "id",    "prompt", "prompt_ids", "max_tokens",         "temperature", "top_p", "top_k",
      "min_p", "seed",   "n",          "repetition_penalty", "ignore_eos",  "stop",  "stop_token_ids"};
  std::ifstream in(options.input_path);
  if (!in) fail("{}: cannot open input", options.input_path);
  std::vector<InputRow> rows;
  std::set<std::string> seen;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", options.input_path, line_no);
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not JSON: {}", where, e.what());
    }
    if (!row.is_object()) fail("{}: a row must be a JSON object", where);
    for (const auto& [key, value] : row.items()) {
      if (!known.contains(key)) fail("{}: unknown field '{}'", where, key);
    }
    InputRow r;
    if (!row.contains("id") || !(row["id"].is_string() || row["id"].is_number_integer())) {
      fail("{}: needs an 'id' (string or integer)", where);
    }
    r.id = row["id"];
    r.key = id_key(r.id);
    if (!seen.insert(r.key).second) fail("{}: duplicate id {}", where, r.key);
    if (row.contains("prompt_ids") == row.contains("prompt"))
      fail("{}: needs exactly one of 'prompt', 'prompt_ids'", where);
    if (row.contains("prompt_ids")) {
      try {
        r.prompt_ids = row["prompt_ids"].get<std::vector<int32_t>>();
      } catch (const nlohmann::json::exception&) {
        fail("{}: 'prompt_ids' must be a list of integers", where);
      }
    } else {
      if (!row["prompt"].is_string()) fail("{}: 'prompt' must be a string", where);
      if (!tokenizer) fail("{}: text prompt but {} has no tokenizer.json (use prompt_ids)", where, options.model_dir);
      r.prompt_ids = tokenizer->encode(row["prompt"].get<std::string>(), true);
    }
    r.params = parse_sampling(row, where, options);
    if (!r.params.stop.empty() && !tokenizer) {
      fail("{}: stop strings need text, but {} has no tokenizer.json", where, options.model_dir);
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

// Ids already written. A row cut off by a kill (no final newline) is dropped from the file so appends stay valid.
std::set<std::string> read_done_ids(const std::string& path) {
  std::set<std::string> done;
  if (!std::filesystem::exists(path)) return done;
  std::string content;
  {
    std::ifstream in(path, std::ios::binary);
    content.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const size_t complete = content.rfind('\n') == std::string::npos ? 0 : content.rfind('\n') + 1;
  if (complete != content.size()) std::filesystem::resize_file(path, complete);
  size_t start = 0;
  for (int line_no = 1; start < complete; ++line_no) {
    const size_t end = content.find('\n', start);
    const std::string line = content.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    try {
      done.insert(id_key(nlohmann::json::parse(line).at("id")));
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: existing output row is not valid: {}", path, line_no, e.what());
    }
  }
  return done;
}

class AppendOnlyFile {
 public:
  explicit AppendOnlyFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("{}: cannot open output for appending", path);
  }
  ~AppendOnlyFile() { ::close(fd_); }
  AppendOnlyFile(const AppendOnlyFile&) = delete;
  AppendOnlyFile& operator=(const AppendOnlyFile&) = delete;

  // One write per row, then fsync: a row is either complete on disk or (cut by a kill) trimmed on resume.
  void append_line(const std::string& line) {
    const std::string data = line + "\n";
    size_t written = 0;
    while (written < data.size()) {
      const ssize_t n = ::write(fd_, data.data() + written, data.size() - written);
      if (n < 0) fail("{}: write failed", path_);
      written += static_cast<size_t>(n);
    }
    if (::fsync(fd_) != 0) fail("{}: fsync failed", path_);
  }

 private:
  std::string path_;
  int fd_ = -1;
};

nlohmann::json sequence_json(const SequenceResult& s) {
  return {{"text", s.text}, {"token_ids", s.token_ids}, {"finish_reason", finish_reason_name(s.finish_reason)}};
}

nlohmann::json output_row(const InputRow& input, const RequestResult& r) {
  nlohmann::json row = {{"id", input.id}};
  row.update(sequence_json(r.sequences.at(0)));
  if (r.sequences.size() > 1) {
    row["choices"] = nlohmann::json::array();
    for (const auto& s : r.sequences) row["choices"].push_back(sequence_json(s));
  }
  if (!r.error.empty()) row["error"] = r.error;
  row["prompt_tokens"] = r.prompt_token_ids.size();
  row["cached_prompt_tokens"] = r.num_cached_prompt_tokens;
  const auto& times = r.sequences.at(0).token_times_s;
  const double decode_s = times.size() > 1 ? times.back() - times.front() : 0.0;
  row["timings"] = {{"queue_s", r.queue_s},
                    {"ttft_s", r.ttft_s},
                    {"total_s", r.total_s},
                    {"decode_tok_per_s", decode_s > 0 ? static_cast<double>(times.size() - 1) / decode_s : 0.0}};
  return row;
}

void run_batch(const BatchOptions& options) {
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(options.model_dir + "/tokenizer.json")) {
    tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_dir(options.model_dir));
  }
  const std::vector<InputRow> rows = read_input(options, tokenizer.get());
  const std::set<std::string> done = read_done_ids(options.output_path);
  std::vector<const InputRow*> todo;
  for (const InputRow& row : rows) {
    if (!done.contains(row.key)) todo.push_back(&row);
  }
  fmt::print(stderr, "qed batch: {} rows, {} already in {}, {} to run\n", rows.size(), rows.size() - todo.size(),
             options.output_path, todo.size());
  if (todo.empty()) return;

  EngineConfig config;
  config.scheduler.max_num_seqs = options.max_batch;
  config.scheduler.max_num_batched_tokens = std::max(options.max_batched_tokens, options.max_batch);
  BackendSelection selection = backend_selection(options.backend);
  selection.threads = options.threads;
  selection.block_size = options.block_size;
  selection.kv_cache_bytes = options.kv_cache_mb << 20;
  selection.max_batched_tokens = config.scheduler.max_num_batched_tokens;
  auto backend = make_backend(options.model_dir, selection);
  config.enable_prefix_caching = !options.no_prefix_cache;
  config.drafter = make_drafter(options.spec, options.model_dir);
  Engine engine(*backend, config, tokenizer ? tokenizer_decoder_factory(*tokenizer) : TokenDecoderFactory{});

  AppendOnlyFile out(options.output_path);
  std::map<RequestId, const InputRow*> in_flight;
  size_t next = 0, written = 0;
  int64_t generated = 0;
  const auto start = Clock::now();
  auto last_report = start;
  // Keep the queue a little deeper than the batch so the scheduler always has work to admit.
  const size_t depth = static_cast<size_t>(options.max_batch) * 2;
  while (next < todo.size() || engine.has_unfinished()) {
    while (next < todo.size() && in_flight.size() < depth) {
      const InputRow& row = *todo[next++];
      try {
        in_flight[engine.add_request(row.prompt_ids, row.params)] = &row;
      } catch (const Error& e) {
        fail("{}: id {}: {}", options.input_path, row.key, e.what());
      }
    }
    engine.step();
    for (RequestResult& r : engine.take_finished()) {
      const InputRow& row = *in_flight.at(r.id);
      for (const auto& s : r.sequences) generated += static_cast<int64_t>(s.token_ids.size());
      out.append_line(output_row(row, r).dump());
      in_flight.erase(r.id);
      ++written;
    }
    const auto now = Clock::now();
    if (now - last_report > std::chrono::seconds(1) || written == todo.size()) {
      const double elapsed = std::chrono::duration<double>(now - start).count();
      fmt::print(stderr, "qed batch: {}/{} rows, {} tokens, {:.1f} tok/s\n", written, todo.size(), generated,
                 generated / std::max(elapsed, 1e-9));
      last_report = now;
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const EngineStats& stats = engine.stats();
  nlohmann::json summary = {{"rows", written},
                            {"generated_tokens", generated},
                            {"wall_s", elapsed},
                            {"tok_per_s", generated / std::max(elapsed, 1e-9)},
                            {"steps", stats.steps},
                            {"prompt_tokens", stats.prompt_tokens},
                            {"prefill_tokens", stats.prefill_tokens},
                            {"cached_tokens", stats.cached_tokens},
                            {"preemptions", stats.preemptions},
                            {"max_batch", options.max_batch},
                            {"kv_blocks", engine.block_manager().num_blocks()},
                            {"speculation", spec_stats_json(options.spec, stats)}};
  fmt::print(stderr, "qed batch: done {}\n", summary.dump());
  if (!options.stats_path.empty()) {
    std::ofstream stats_out(options.stats_path);
    stats_out << summary.dump(2) << "\n";
    if (!stats_out) fail("{}: cannot write stats", options.stats_path);
  }
}

}  // namespace

void register_batch(CLI::App& app) {
  auto options = std::make_shared<BatchOptions>();
  auto* cmd = app.add_subcommand("batch", "Generate for every row of a JSONL file through the engine (resumable)");
  cmd->add_option("--model", options->model_dir, "model directory (config.json, safetensors, tokenizer.json)")
      ->required();
  cmd->add_option("--input", options->input_path, "JSONL rows: id, prompt | prompt_ids, optional sampling fields")
      ->required();
  cmd->add_option("--output", options->output_path, "JSONL results, appended; ids already there are skipped")
      ->required();
  cmd->add_option("--max-batch", options->max_batch, "sequences per step")->check(CLI::PositiveNumber);
  cmd->add_option("--max-batched-tokens", options->max_batched_tokens, "tokens per step (prefill chunks + decodes)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", options->threads, "CPU threads (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--kv-cache-mb", options->kv_cache_mb, "KV cache budget in MiB")->check(CLI::PositiveNumber);
  cmd->add_option("--block-size", options->block_size, "tokens per KV block")->check(CLI::PositiveNumber);
  cmd->add_flag("--no-prefix-cache", options->no_prefix_cache, "disable prefix caching");
  add_backend_flags(cmd, options->backend);
  cmd->add_option("--max-tokens", options->max_tokens, "default max_tokens for rows without one")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", options->temperature, "default temperature for rows without one");
  cmd->add_option("--stats", options->stats_path, "write a JSON summary (throughput, prefix-cache hits) here");
  add_spec_options(*cmd, options->spec);
  cmd->callback([options] { run_batch(*options); });
}

}  // namespace qed::cli
