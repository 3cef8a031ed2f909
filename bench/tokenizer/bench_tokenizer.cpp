// Single-thread encode throughput: reads documents (one JSON string per line), encodes each one `--repeat`
// times with qed's tokenizer and prints one JSON object with bytes/s, tokens/s and a checksum of the ids (so
// run.py can confirm both engines produced the same tokens).
//   bench_tokenizer TOKENIZER_DIR DOCS.jsonl [--repeat N]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_tokenizer TOKENIZER_DIR DOCS.jsonl [--repeat N]\n");
    return 2;
  }
  int repeat = 3;
  if (argc == 5 && std::string(argv[3]) == "--repeat") repeat = std::stoi(argv[4]);
  try {
    const auto load_start = std::chrono::steady_clock::now();
    const qed::Tokenizer tokenizer = qed::Tokenizer::from_dir(argv[1]);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

    std::vector<std::string> docs;
    std::ifstream in(argv[2]);
    std::string line;
    size_t bytes = 0;
    while (std::getline(in, line)) {
      docs.push_back(nlohmann::json::parse(line).get<std::string>());
      bytes += docs.back().size();
    }

    // Best of `repeat` passes over all documents; the first pass also warms the word cache, as HF's does.
    double best_s = 1e30;
    size_t tokens = 0;
    uint64_t checksum = 0;
    for (int r = 0; r < repeat; ++r) {
      tokens = 0;
      checksum = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const std::string& doc : docs) {
        const std::vector<int32_t> ids = tokenizer.encode(doc, false);
        tokens += ids.size();
        for (const int32_t id : ids) checksum = checksum * 1000003u + static_cast<uint32_t>(id);
      }
      best_s = std::min(best_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    nlohmann::json out = {{"documents", docs.size()},
                          {"bytes", bytes},
                          {"tokens", tokens},
                          {"seconds", best_s},
                          {"load_seconds", load_s},
                          {"bytes_per_s", bytes / best_s},
                          {"tokens_per_s", tokens / best_s},
                          {"checksum", std::to_string(checksum)}};
    std::printf("%s\n", out.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
