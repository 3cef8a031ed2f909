// One layer's attention of a prompt on the 14B shape (40 query heads, 8 KV heads, head_dim 128 by default): the
// tensor-core prefill kernel and the flash-decoding kernel, timed with CUDA events (median of --iters runs after a
// warm-up) on random bf16 data in permuted 16-token blocks. Prints ms per layer, the same ×layers, and TFLOP/s of
// the causal attention (4·head_dim FLOPs per visible (query head, key) pair).
//   bench_prefill_attention [--prompt 1024,8192] [--cached 0] [--heads 40] [--kv-heads 8] [--head-dim 128]
//                           [--block-size 16] [--layers 48] [--iters 10] [--tile-rows 64|128 --warps 4|8]
//                           [--skip-decode-kernel] [--json PATH]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/prefill_attention_kernels.h"
#include "core/dtype.h"

namespace {

struct Options {
  std::vector<int> prompts = {1024, 8192};
  int cached = 0, heads = 40, kv_heads = 8, head_dim = 128, block_size = 16, layers = 48, iters = 10;
  qed::cuda::PrefillTiling tiling = qed::cuda::kPrefillTiling;
  bool decode_kernel = true;
  std::string json_path;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--prompt") {
      o.prompts.clear();
      std::stringstream list(value());
      for (std::string item; std::getline(list, item, ',');) o.prompts.push_back(std::stoi(item));
    } else if (arg == "--cached") {
      o.cached = std::stoi(value());
    } else if (arg == "--heads") {
      o.heads = std::stoi(value());
    } else if (arg == "--kv-heads") {
      o.kv_heads = std::stoi(value());
    } else if (arg == "--head-dim") {
      o.head_dim = std::stoi(value());
    } else if (arg == "--block-size") {
      o.block_size = std::stoi(value());
    } else if (arg == "--layers") {
      o.layers = std::stoi(value());
    } else if (arg == "--tile-rows") {
      o.tiling.rows = std::stoi(value());
    } else if (arg == "--warps") {
      o.tiling.warps = std::stoi(value());
    } else if (arg == "--iters") {
      o.iters = std::stoi(value());
    } else if (arg == "--json") {
      o.json_path = value();
    } else if (arg == "--skip-decode-kernel") {
      o.decode_kernel = false;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      std::exit(2);
    }
  }
  return o;
}

std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = qed::float_to_bf16(dist(rng));
  return v;
}

template <typename T>
qed::cuda::DeviceBuffer upload(const std::vector<T>& host) {
  qed::cuda::DeviceBuffer buffer(std::max<size_t>(host.size() * sizeof(T), 1));
  buffer.upload(host.data(), host.size() * sizeof(T));
  return buffer;
}

template <typename F>
float median_ms(int iters, F&& launch) {
  launch();  // warm-up: module load, smem attribute
  QED_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  QED_CUDA_CHECK(cudaEventCreate(&start));
  QED_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < iters; ++i) {
    QED_CUDA_CHECK(cudaEventRecord(start));
    launch();
    QED_CUDA_CHECK(cudaEventRecord(stop));
    QED_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    QED_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  QED_CUDA_CHECK(cudaEventDestroy(start));
  QED_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void bench_prompt(const Options& o, int n, int num_sms, nlohmann::json& results) {
  std::mt19937 rng(7);
  const int kv_dim = o.kv_heads * o.head_dim, q_dim = o.heads * o.head_dim, q_stride = q_dim + 2 * kv_dim;
  const int total = o.cached + n;
  const int blocks = (total + o.block_size - 1) / o.block_size;
  std::vector<int32_t> table(static_cast<size_t>(blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  auto d_qkv = upload(random_bf16(size_t(n) * q_stride, rng));
  auto d_k = upload(random_bf16(size_t(blocks) * o.block_size * kv_dim, rng));
  auto d_v = upload(random_bf16(size_t(blocks) * o.block_size * kv_dim, rng));
  qed::cuda::DeviceBuffer d_out(size_t(n) * q_dim * sizeof(uint16_t));
  auto d_table = upload(table);
  auto d_q_start = upload(std::vector<int32_t>{0});
  auto d_num_new = upload(std::vector<int32_t>{n});
  auto d_num_cached = upload(std::vector<int32_t>{o.cached});
  auto d_block_offset = upload(std::vector<int32_t>{0});
  auto d_mask_offset = upload(std::vector<int32_t>{-1});
  auto d_row_seq = upload(std::vector<int32_t>(size_t(n), 0));
  std::vector<int32_t> tiles;
  for (int first = n - 1 - (n - 1) % o.tiling.rows; first >= 0; first -= o.tiling.rows) {
    tiles.push_back(0);
    tiles.push_back(first);  // heaviest first, as pack_step orders them
  }
  auto d_tiles = upload(tiles);
  qed::cuda::AttentionBatch batch;
  batch.row_seq = d_row_seq.as<int32_t>();
  batch.seq_q_start = d_q_start.as<int32_t>();
  batch.seq_num_new = d_num_new.as<int32_t>();
  batch.seq_num_cached = d_num_cached.as<int32_t>();
  batch.seq_block_offset = d_block_offset.as<int32_t>();
  batch.block_tables = d_table.as<int32_t>();
  batch.seq_mask_offset = d_mask_offset.as<int32_t>();
  batch.masks = nullptr;
  batch.rows = n;
  batch.max_kv_len = total;
  const qed::cuda::AttentionShape shape{o.heads, o.kv_heads, o.head_dim, o.block_size,
                                        1.0f / std::sqrt(float(o.head_dim))};
  const double pairs = double(n) * o.cached + double(n) * (n + 1) / 2.0;
  const double flops = 4.0 * o.head_dim * o.heads * pairs;
  auto report = [&](const char* kernel, float ms) {
    results.push_back({{"kernel", kernel},
                       {"prompt", n},
                       {"cached", o.cached},
                       {"ms_per_layer", ms},
                       {"tflops", flops / (double(ms) * 1e-3) / 1e12}});
    std::printf("%-16s prompt %6d cached %6d: %9.3f ms/layer  %9.1f ms x%d layers  %7.1f TFLOP/s\n", kernel, n,
                o.cached, double(ms), double(ms) * o.layers, o.layers, flops / (double(ms) * 1e-3) / 1e12);
  };
  const float prefill_ms = median_ms(o.iters, [&] {
    qed::cuda::prefill_attention_bf16(d_qkv.as<uint16_t>(), q_stride, d_k.as<uint16_t>(), d_v.as<uint16_t>(), batch,
                                      d_tiles.as<int32_t>(), int(tiles.size() / 2), o.tiling, shape,
                                      d_out.as<uint16_t>(), nullptr);
  });
  const std::string name = "prefill " + std::to_string(o.tiling.rows) + "/" + std::to_string(o.tiling.warps) + "w";
  report(name.c_str(), prefill_ms);
  if (!o.decode_kernel) return;
  const size_t capacity = size_t(64) << 20;
  const int partitions = qed::cuda::attention_partitions(batch, shape, num_sms, capacity);
  qed::cuda::DeviceBuffer partials(capacity * sizeof(float));
  const float decode_ms = median_ms(std::max(1, std::min(o.iters, 3)), [&] {
    qed::cuda::paged_attention_bf16(d_qkv.as<uint16_t>(), q_stride, d_k.as<uint16_t>(), d_v.as<uint16_t>(), batch,
                                    shape, partitions, partials.as<float>(), d_out.as<uint16_t>(), nullptr);
  });
  report("flash-decoding", decode_ms);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (qed::cuda::list_devices().empty()) {
    std::fprintf(stderr, "bench_prefill_attention: no CUDA device\n");
    return 1;
  }
  if (!qed::cuda::prefill_tiling_supported(o.tiling)) {
    std::fprintf(stderr, "bench_prefill_attention: --tile-rows/--warps must be 64/4, 128/8 or 128/4\n");
    return 2;
  }
  if (!qed::cuda::prefill_attention_supports(o.head_dim)) {
    std::fprintf(stderr, "bench_prefill_attention: head_dim %d has no prefill kernel (64, 128)\n", o.head_dim);
    return 2;
  }
  int num_sms = 0;
  QED_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, 0));
  nlohmann::json results = nlohmann::json::array();
  for (int n : o.prompts) bench_prompt(o, n, num_sms, results);
  if (!o.json_path.empty()) {
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    const nlohmann::json document = {{"bench", "prefill_attention"},
                                     {"timestamp", stamp},
                                     {"device", qed::cuda::list_devices().front().name},
                                     {"shape",
                                      {{"heads", o.heads},
                                       {"kv_heads", o.kv_heads},
                                       {"head_dim", o.head_dim},
                                       {"block_size", o.block_size},
                                       {"tile_rows", o.tiling.rows},
                                       {"warps", o.tiling.warps}}},
                                     {"iters", o.iters},
                                     {"results", results}};
    std::ofstream(o.json_path) << document.dump(2) << "\n";
  }
  return 0;
}
