// qed tokenize: encode stdin with a tokenizer.json (or decode ids back), for scripts and parity tests.
//   plain:  all of stdin is one text → one line of space-separated ids (--decode: ids → the text, verbatim)
//   --json: every stdin line is a JSON string → a JSON array of ids per line (--decode: array → JSON string)
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace qed::cli {
namespace {

struct TokenizeOptions {
  std::string tokenizer;
  bool json = false;
  bool add_special_tokens = false;
  bool decode = false;
  bool skip_special_tokens = false;
};

Tokenizer load(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return Tokenizer::from_file(path);
  return Tokenizer::from_dir(path);
}

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  return line;
}

std::vector<int32_t> parse_ids_text(const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < INT32_MIN || v > INT32_MAX)
      fail("qed tokenize --decode: '{}' is not a token id", word);
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

void run_json_lines(const Tokenizer& tokenizer, const TokenizeOptions& opt) {
  std::string line;
  size_t line_no = 0;
  std::string out;
  while (std::getline(std::cin, line)) {
    ++line_no;
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("stdin line {}: not valid JSON: {}", line_no, e.what());
    }
    if (opt.decode) {
      if (!value.is_array()) fail("stdin line {}: expected a JSON array of token ids", line_no);
      std::vector<int32_t> ids;
      for (const auto& v : value) {
        if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN || v.get<int64_t>() > INT32_MAX) {
          fail("stdin line {}: expected a JSON array of token ids, found {}", line_no, v.dump());
        }
        ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
      }
      out = nlohmann::json(tokenizer.decode(ids, opt.skip_special_tokens)).dump();
    } else {
      if (!value.is_string()) fail("stdin line {}: expected a JSON string", line_no);
      out = nlohmann::json(tokenizer.encode(value.get_ref<const std::string&>(), opt.add_special_tokens)).dump();
    }
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
}

void run(const TokenizeOptions& opt) {
  const Tokenizer tokenizer = load(opt.tokenizer);
  std::ios::sync_with_stdio(false);
  if (opt.json) {
    run_json_lines(tokenizer, opt);
  } else {
    const std::string input{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    const std::string out = opt.decode ? tokenizer.decode(parse_ids_text(input), opt.skip_special_tokens)
                                       : ids_line(tokenizer.encode(input, opt.add_special_tokens)) + "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  std::fflush(stdout);
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto opt = std::make_shared<TokenizeOptions>();
  auto* cmd =
      app.add_subcommand("tokenize", "Encode stdin to token ids (or --decode ids to text) with a tokenizer.json");
  cmd->add_option("--tokenizer", opt->tokenizer, "Model/tokenizer directory (or a tokenizer.json file)")->required();
  cmd->add_flag("--json", opt->json, "Line mode: each stdin line is a JSON string (or, with --decode, an id array)");
  cmd->add_flag("--add-special-tokens", opt->add_special_tokens, "Apply the post-processor (e.g. Llama-3's BOS)");
  cmd->add_flag("--decode", opt->decode, "Decode token ids to text instead of encoding");
  cmd->add_flag("--skip-special-tokens", opt->skip_special_tokens, "With --decode: drop special tokens");
  cmd->callback([opt] { run(*opt); });
}

}  // namespace qed::cli
