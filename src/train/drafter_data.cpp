#include "train/drafter_data.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "tokenizer/model_text_tools.h"

namespace qed::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class RowEncoder {
 public:
  explicit RowEncoder(const std::string& model_dir) : text_(model_dir, ModelTextTools::UnknownChatTemplate::Fail) {}

  Example encode(const json& row, const std::string& where) {
    if (!row.is_object()) fail("{}: a training row must be a JSON object", where);
    if (auto ids = row.find("input_ids"); ids != row.end()) return from_ids(row, *ids, where);
    if (auto text = string_of(row, "text", where)) {
      Example e;
      e.ids = tokenizer(where).encode(*text);
      e.labels = e.ids;
      return e;
    }
    auto problem = string_of(row, "problem", where);
    std::optional<std::string> solution;
    for (const char* key : {"generated_solution", "solution", "tir_solution"}) {
      if (!solution) solution = string_of(row, key, where);
    }
    if (!problem || !solution) {
      fail(
          "{}: a training row needs 'input_ids', 'text', or 'problem' with 'generated_solution'/'solution'/"
          "'tir_solution'",
          where);
    }
    const Tokenizer& tok = tokenizer(where);
    std::string prompt = *problem, full = *problem + "\n\n" + *solution;
    if (const ChatTemplate* chat = chat_template()) {
      ChatTemplate::Options options;
      options.add_generation_prompt = true;
      prompt = chat->render({{"user", *problem}}, options);
      options.add_generation_prompt = false;
      full = chat->render({{"user", *problem}, {"assistant", *solution}}, options);
    }
    if (!full.starts_with(prompt)) fail("{}: the chat template's reply does not extend its prompt", where);
    Example e;
    e.ids = tok.encode(prompt);
    e.labels.assign(e.ids.size(), kIgnoreLabel);
    // The template's trailing newline after the end-of-turn is not generated: the reply ends at the eos.
    std::string reply = full.substr(prompt.size());
    while (!reply.empty() && reply.back() == '\n') reply.pop_back();
    const std::vector<int32_t> reply_ids = tok.encode(reply);
    e.ids.insert(e.ids.end(), reply_ids.begin(), reply_ids.end());
    e.labels.insert(e.labels.end(), reply_ids.begin(), reply_ids.end());
    return e;
  }

 private:
  static std::optional<std::string> string_of(const json& row, const char* key, const std::string& where) {
    auto it = row.find(key);
    if (it == row.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) fail("{}: '{}' must be a string", where, key);
    return it->get<std::string>();
  }

  static std::vector<int32_t> int_list(const json& value, const char* key, bool allow_ignore,
                                       const std::string& where) {
    if (!value.is_array() || value.empty()) fail("{}: '{}' must be a non-empty list of token ids", where, key);
    std::vector<int32_t> out;
    for (const json& id : value) {
      const bool ok = id.is_number_integer() && id.get<int64_t>() <= INT32_MAX &&
                      (id.get<int64_t>() >= 0 || (allow_ignore && id.get<int64_t>() == kIgnoreLabel));
      if (!ok) fail("{}: '{}' must hold non-negative integers{}", where, key, allow_ignore ? " or -100" : "");
      out.push_back(int32_t(id.get<int64_t>()));
    }
    return out;
  }

  static Example from_ids(const json& row, const json& ids, const std::string& where) {
    Example e;
    e.ids = int_list(ids, "input_ids", false, where);
    if (auto labels = row.find("labels"); labels != row.end()) {
      e.labels = int_list(*labels, "labels", true, where);
      if (e.labels.size() != e.ids.size()) {
        fail("{}: {} labels for {} input_ids", where, e.labels.size(), e.ids.size());
      }
    } else {
      e.labels = e.ids;
    }
    return e;
  }

  const Tokenizer& tokenizer(const std::string& where) { return text_.tokenizer(where); }
  const ChatTemplate* chat_template() { return text_.chat_template(); }

  ModelTextTools text_;
};

}  // namespace

std::vector<Example> load_drafter_examples(const DrafterDataOptions& options, const std::string& model_dir) {
  if (options.max_len < 3)
    fail("--max-len must be at least 3 (a context, an input and a target), got {}", options.max_len);
  if (options.rows <= 0) fail("--rows must be positive, got {}", options.rows);
  std::error_code ec;
  if (!fs::is_regular_file(options.path, ec)) fail("{}: no such data file", options.path);
  std::ifstream in(options.path);
  if (!in) fail("{}: cannot open", options.path);
  RowEncoder encoder(model_dir);
  std::vector<Example> examples;
  std::string line;
  int64_t rows = 0;
  for (int line_no = 1; rows < options.rows && std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++rows;
    const std::string where = fmt::format("{}:{}", options.path, line_no);
    json row;
    try {
      row = json::parse(line);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", where, e.what());
    }
    Example e = encoder.encode(row, where);
    for (int32_t id : e.ids) {
      if (options.vocab_size > 0 && id >= options.vocab_size) {
        fail("{}: token id {} is outside the model's vocab of {}", where, id, options.vocab_size);
      }
    }
    if (e.ids.size() > size_t(options.max_len)) {
      e.ids.resize(size_t(options.max_len));
      e.labels.resize(size_t(options.max_len));
    }
    if (!draft_positions(e, 1).empty()) examples.push_back(std::move(e));
  }
  if (rows == 0) fail("{}: no rows", options.path);
  if (examples.empty()) fail("{}: no row has a supervised token beyond its first two", options.path);
  return examples;
}

}  // namespace qed::train
