// One layer's decode attention (one query row per sequence) on the 14B shape by default (40 query heads, 8 KV
// heads, head_dim 128, bf16 paged KV in shuffled 16-token blocks): paged_attention_bf16 including its split-K merge,
// timed with CUDA events over back-to-back launches that rotate among several KV sets (> 256 MiB in all, so the
// 50 MiB L2 does not serve repeats), median of --iters. Prints µs per layer and GB/s of the K/V bytes a step must
// read (rows × context × kv_heads × head_dim × 2 tensors × 2 bytes), for
//   tc        the tensor-core kernel, partitions from attention_partitions()
//   tc-bucket the same with max_kv_len = the CUDA-graph context bucket (power of two >= context, >= 512)
//   cuda-core the CUDA-core kernel (the kernel before the tensor-core one), same partitions as tc
//   tc-pN     the tensor-core kernel with N partitions (--partitions N,M,...)
//   pipe*     the same for the cp.async-pipelined variant (DecodeKernel::TensorCoresPipelined)
// --fp8: an FP8 E4M3 cache (random codes, scale 1/64): half the bytes per key.
// --verify T (T >= 2): speculative verify steps instead: --rows sequences of T causal new rows each over --context
// keys (the last T of them new), timing
//   row       paged_attention (one tensor-core CTA per row: each row re-reads the sequence's K/V)
//   verify    paged_attention_verify (one CTA per sequence for all T rows)
// both with the fused merge, GB/s of the K/V bytes the step must read once (sequences × context × ...).
//   bench_decode_attention [--rows 1,12,32] [--context 256,2400,4500] [--heads 40] [--kv-heads 8]
//                          [--head-dim 128] [--block-size 16] [--iters 20] [--partitions 4,16,64] [--fp8]
//                          [--verify T] [--json PATH]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
#include "core/dtype.h"

namespace {

struct Options {
  std::vector<int> rows = {1, 12, 32};
  std::vector<int> contexts = {256, 2400, 4500};
  std::vector<int> partitions;
  int heads = 40, kv_heads = 8, head_dim = 128, block_size = 16, iters = 20;
  bool fp8 = false;
  int verify = 0;
  std::string json_path;
};

std::vector<int> int_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) out.push_back(std::stoi(item));
  return out;
}

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
    if (arg == "--rows") {
      o.rows = int_list(value());
    } else if (arg == "--context") {
      o.contexts = int_list(value());
    } else if (arg == "--partitions") {
      o.partitions = int_list(value());
    } else if (arg == "--heads") {
      o.heads = std::stoi(value());
    } else if (arg == "--kv-heads") {
      o.kv_heads = std::stoi(value());
    } else if (arg == "--head-dim") {
      o.head_dim = std::stoi(value());
    } else if (arg == "--block-size") {
      o.block_size = std::stoi(value());
    } else if (arg == "--iters") {
      o.iters = std::stoi(value());
    } else if (arg == "--verify") {
      o.verify = std::stoi(value());
    } else if (arg == "--fp8") {
      o.fp8 = true;
    } else if (arg == "--json") {
      o.json_path = value();
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      std::exit(2);
    }
  }
  return o;
}

template <typename T>
qed::cuda::DeviceBuffer upload(const std::vector<T>& host) {
  qed::cuda::DeviceBuffer buffer(std::max<size_t>(host.size() * sizeof(T), 1));
  buffer.upload(host.data(), host.size() * sizeof(T));
  return buffer;
}

// Random bf16 in [-1, 1) filled on the host in one pass per buffer (never zeros: METHOD.md).
void fill_random(qed::cuda::DeviceBuffer& buffer, size_t elems, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<uint16_t> host(elems);
  for (uint16_t& x : host) x = qed::float_to_bf16(dist(rng));
  buffer.upload(host.data(), elems * sizeof(uint16_t));
}

// Random E4M3 codes, never the NaN codes 0x7F / 0xFF (the cache writers saturate at 448).
void fill_random_codes(qed::cuda::DeviceBuffer& buffer, size_t elems, std::mt19937& rng) {
  std::vector<uint8_t> host(elems);
  for (uint8_t& x : host) {
    x = uint8_t(rng());
    if ((x & 0x7F) == 0x7F) x ^= 0x01;
  }
  buffer.upload(host.data(), elems);
}

struct KvSet {
  qed::cuda::DeviceBuffer tables;
  qed::cuda::AttentionBatch batch;
};

void bench_case(const Options& o, int rows, int context, int num_sms, nlohmann::json& results) {
  std::mt19937 rng(11);
  const int kv_dim = o.kv_heads * o.head_dim, q_dim = o.heads * o.head_dim, q_stride = q_dim + 2 * kv_dim;
  const int blocks_per_row = (context + o.block_size - 1) / o.block_size;
  const double element_bytes = o.fp8 ? 1.0 : 2.0;
  const double kv_bytes = double(rows) * context * kv_dim * 2.0 * element_bytes;
  const int sets = int(std::clamp(std::ceil(256.0 * (1 << 20) / kv_bytes), 1.0, 256.0));
  const size_t total_blocks = size_t(sets) * rows * blocks_per_row;
  const size_t cache_elems = total_blocks * o.block_size * kv_dim;
  qed::cuda::DeviceBuffer k(cache_elems * size_t(element_bytes)), v(cache_elems * size_t(element_bytes));
  if (o.fp8) {
    fill_random_codes(k, cache_elems, rng);
    fill_random_codes(v, cache_elems, rng);
  } else {
    fill_random(k, cache_elems, rng);
    fill_random(v, cache_elems, rng);
  }
  const qed::cuda::KvCacheView cache{k.data(), v.data(), o.fp8, 1.0f / 64.0f, 1.0f / 64.0f};
  qed::cuda::DeviceBuffer qkv(size_t(rows) * q_stride * 2), out(size_t(rows) * q_dim * 2);
  fill_random(qkv, size_t(rows) * q_stride, rng);
  std::vector<int32_t> physical(total_blocks);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);

  const size_t n_rows = static_cast<size_t>(rows);
  std::vector<int32_t> row_seq(n_rows), q_start(n_rows), block_offset(n_rows);
  std::iota(row_seq.begin(), row_seq.end(), 0);
  std::iota(q_start.begin(), q_start.end(), 0);
  for (int r = 0; r < rows; ++r) block_offset[size_t(r)] = r * blocks_per_row;
  auto d_row_seq = upload(row_seq), d_q_start = upload(q_start), d_block_offset = upload(block_offset);
  auto d_num_new = upload(std::vector<int32_t>(size_t(rows), 1));
  auto d_num_cached = upload(std::vector<int32_t>(size_t(rows), context - 1));
  auto d_mask_offset = upload(std::vector<int32_t>(size_t(rows), -1));
  std::vector<KvSet> kv_sets(static_cast<size_t>(sets));
  for (int s = 0; s < sets; ++s) {
    std::vector<int32_t> tables(physical.begin() + ptrdiff_t(s) * rows * blocks_per_row,
                                physical.begin() + ptrdiff_t(s + 1) * rows * blocks_per_row);
    KvSet& set = kv_sets[size_t(s)];
    set.tables = upload(tables);
    qed::cuda::AttentionBatch& b = set.batch;
    b.row_seq = d_row_seq.as<int32_t>();
    b.seq_q_start = d_q_start.as<int32_t>();
    b.seq_num_new = d_num_new.as<int32_t>();
    b.seq_num_cached = d_num_cached.as<int32_t>();
    b.seq_block_offset = d_block_offset.as<int32_t>();
    b.block_tables = set.tables.as<int32_t>();
    b.seq_mask_offset = d_mask_offset.as<int32_t>();
    b.rows = rows;
    b.max_kv_len = context;
  }
  const qed::cuda::AttentionShape shape{o.heads, o.kv_heads, o.head_dim, o.block_size,
                                        1.0f / std::sqrt(float(o.head_dim))};
  const size_t capacity = size_t(64) << 20;
  qed::cuda::DeviceBuffer partials(capacity * sizeof(float));
  int bucket = 512;
  while (bucket < context) bucket *= 2;

  cudaEvent_t start, stop;
  QED_CUDA_CHECK(cudaEventCreate(&start));
  QED_CUDA_CHECK(cudaEventCreate(&stop));
  using qed::cuda::DecodeKernel;
  auto time_us = [&](int max_kv_len, int partitions, DecodeKernel kernel) {
    auto launch_all = [&] {
      for (KvSet& set : kv_sets) {
        qed::cuda::AttentionBatch b = set.batch;
        b.max_kv_len = max_kv_len;
        qed::cuda::paged_attention(qkv.as<uint16_t>(), q_stride, cache, b, shape, partitions, partials.as<float>(),
                                   out.as<uint16_t>(), nullptr, kernel);
      }
    };
    launch_all();  // warm-up: module load
    QED_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> times;
    for (int i = 0; i < o.iters; ++i) {
      QED_CUDA_CHECK(cudaEventRecord(start));
      launch_all();
      QED_CUDA_CHECK(cudaEventRecord(stop));
      QED_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      QED_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      times.push_back(ms * 1000.0f / float(sets));
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  auto report = [&](const std::string& kernel, int partitions, float us) {
    const double gbps = kv_bytes / (double(us) * 1e-6) / 1e9;
    results.push_back({{"kernel", kernel},
                       {"kv_cache_dtype", o.fp8 ? "fp8" : "bf16"},
                       {"rows", rows},
                       {"context", context},
                       {"partitions", partitions},
                       {"us_per_layer", us},
                       {"kv_gb_per_s", gbps}});
    std::printf("%-11s %s rows %3d context %6d partitions %4d: %9.2f us/layer %8.1f GB/s\n", kernel.c_str(),
                o.fp8 ? "fp8 " : "bf16", rows, context, partitions, double(us), gbps);
  };
  qed::cuda::AttentionBatch sizing = kv_sets[0].batch;
  const int auto_parts = qed::cuda::attention_partitions(sizing, shape, num_sms, capacity);
  report("tc", auto_parts, time_us(context, auto_parts, DecodeKernel::TensorCores));
  report("pipe", auto_parts, time_us(context, auto_parts, DecodeKernel::TensorCoresPipelined));
  sizing.max_kv_len = bucket;
  const int bucket_parts = qed::cuda::attention_partitions(sizing, shape, num_sms, capacity);
  report("tc-bucket", bucket_parts, time_us(bucket, bucket_parts, DecodeKernel::TensorCores));
  report("pipe-bucket", bucket_parts, time_us(bucket, bucket_parts, DecodeKernel::TensorCoresPipelined));
  report("cuda-core", auto_parts, time_us(context, auto_parts, DecodeKernel::CudaCores));
  for (int parts : o.partitions) {
    report("tc-p" + std::to_string(parts), parts, time_us(context, parts, DecodeKernel::TensorCores));
    report("pipe-p" + std::to_string(parts), parts, time_us(context, parts, DecodeKernel::TensorCoresPipelined));
  }
  QED_CUDA_CHECK(cudaEventDestroy(start));
  QED_CUDA_CHECK(cudaEventDestroy(stop));
}

// Verify steps: `seqs` sequences of T causal new rows over `context` keys each.
void bench_verify_case(const Options& o, int seqs, int context, int num_sms, nlohmann::json& results) {
  std::mt19937 rng(12);
  const int T = o.verify, rows = seqs * T;
  const int kv_dim = o.kv_heads * o.head_dim, q_dim = o.heads * o.head_dim, q_stride = q_dim + 2 * kv_dim;
  const int blocks_per_seq = (context + o.block_size - 1) / o.block_size;
  const double element_bytes = o.fp8 ? 1.0 : 2.0;
  const double kv_bytes = double(seqs) * context * kv_dim * 2.0 * element_bytes;
  const int sets = int(std::clamp(std::ceil(256.0 * (1 << 20) / kv_bytes), 1.0, 256.0));
  const size_t total_blocks = size_t(sets) * seqs * blocks_per_seq;
  const size_t cache_elems = total_blocks * o.block_size * kv_dim;
  qed::cuda::DeviceBuffer k(cache_elems * size_t(element_bytes)), v(cache_elems * size_t(element_bytes));
  if (o.fp8) {
    fill_random_codes(k, cache_elems, rng);
    fill_random_codes(v, cache_elems, rng);
  } else {
    fill_random(k, cache_elems, rng);
    fill_random(v, cache_elems, rng);
  }
  const qed::cuda::KvCacheView cache{k.data(), v.data(), o.fp8, 1.0f / 64.0f, 1.0f / 64.0f};
  qed::cuda::DeviceBuffer qkv(size_t(rows) * q_stride * 2), out(size_t(rows) * q_dim * 2);
  fill_random(qkv, size_t(rows) * q_stride, rng);
  std::vector<int32_t> physical(total_blocks);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  const size_t n_rows = static_cast<size_t>(rows), n_seqs = static_cast<size_t>(seqs);
  std::vector<int32_t> row_seq(n_rows), q_start(n_seqs), block_offset(n_seqs), seq_list(n_seqs);
  for (int r = 0; r < rows; ++r) row_seq[size_t(r)] = r / T;
  for (int q = 0; q < seqs; ++q) {
    q_start[size_t(q)] = q * T;
    block_offset[size_t(q)] = q * blocks_per_seq;
    seq_list[size_t(q)] = q;
  }
  auto d_row_seq = upload(row_seq), d_q_start = upload(q_start), d_block_offset = upload(block_offset);
  auto d_seq_list = upload(seq_list);
  auto d_num_new = upload(std::vector<int32_t>(size_t(seqs), T));
  auto d_num_cached = upload(std::vector<int32_t>(size_t(seqs), context - T));
  auto d_mask_offset = upload(std::vector<int32_t>(size_t(seqs), -1));
  std::vector<KvSet> kv_sets(static_cast<size_t>(sets));
  for (int s = 0; s < sets; ++s) {
    std::vector<int32_t> tables(physical.begin() + ptrdiff_t(s) * seqs * blocks_per_seq,
                                physical.begin() + ptrdiff_t(s + 1) * seqs * blocks_per_seq);
    KvSet& set = kv_sets[size_t(s)];
    set.tables = upload(tables);
    qed::cuda::AttentionBatch& b = set.batch;
    b.row_seq = d_row_seq.as<int32_t>();
    b.seq_q_start = d_q_start.as<int32_t>();
    b.seq_num_new = d_num_new.as<int32_t>();
    b.seq_num_cached = d_num_cached.as<int32_t>();
    b.seq_block_offset = d_block_offset.as<int32_t>();
    b.block_tables = set.tables.as<int32_t>();
    b.seq_mask_offset = d_mask_offset.as<int32_t>();
    b.rows = rows;
    b.max_kv_len = context;
  }
  const qed::cuda::AttentionShape shape{o.heads, o.kv_heads, o.head_dim, o.block_size,
                                        1.0f / std::sqrt(float(o.head_dim))};
  const size_t capacity = size_t(64) << 20;
  qed::cuda::DeviceBuffer partials(capacity * sizeof(float));
  qed::cuda::DeviceBuffer counters(std::max<size_t>(qed::cuda::attention_merge_counters(rows, shape), 1) *
                                   sizeof(uint32_t));
  QED_CUDA_CHECK(cudaMemset(counters.data(), 0, qed::cuda::attention_merge_counters(rows, shape) * sizeof(uint32_t)));
  const int row_parts = qed::cuda::attention_partitions(kv_sets[0].batch, shape, num_sms, capacity);
  const int verify_parts = qed::cuda::attention_verify_partitions(seqs, context, rows, shape, num_sms, capacity);
  const bool supported = qed::cuda::attention_verify_supports(shape, T);

  cudaEvent_t start, stop;
  QED_CUDA_CHECK(cudaEventCreate(&start));
  QED_CUDA_CHECK(cudaEventCreate(&stop));
  auto time_us = [&](bool verify) {
    auto launch_all = [&] {
      for (KvSet& set : kv_sets) {
        if (verify) {
          qed::cuda::paged_attention_verify(qkv.as<uint16_t>(), q_stride, cache, set.batch, d_seq_list.as<int32_t>(),
                                            seqs, T, shape, verify_parts, partials.as<float>(), out.as<uint16_t>(),
                                            nullptr, nullptr, nullptr, counters.as<uint32_t>());
        } else {
          qed::cuda::paged_attention(qkv.as<uint16_t>(), q_stride, cache, set.batch, shape, row_parts,
                                     partials.as<float>(), out.as<uint16_t>(), nullptr,
                                     qed::cuda::DecodeKernel::TensorCores, nullptr, nullptr, counters.as<uint32_t>());
        }
      }
    };
    launch_all();
    QED_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> times;
    for (int i = 0; i < o.iters; ++i) {
      QED_CUDA_CHECK(cudaEventRecord(start));
      launch_all();
      QED_CUDA_CHECK(cudaEventRecord(stop));
      QED_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      QED_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      times.push_back(ms * 1000.0f / float(sets));
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  auto report = [&](const std::string& kernel, int partitions, float us) {
    const double gbps = kv_bytes / (double(us) * 1e-6) / 1e9;
    results.push_back({{"kernel", kernel},
                       {"kv_cache_dtype", o.fp8 ? "fp8" : "bf16"},
                       {"seqs", seqs},
                       {"rows_per_seq", T},
                       {"context", context},
                       {"partitions", partitions},
                       {"us_per_layer", us},
                       {"kv_gb_per_s", gbps}});
    std::printf("%-7s %s seqs %3d x T %d context %6d partitions %4d: %9.2f us/layer %8.1f GB/s\n", kernel.c_str(),
                o.fp8 ? "fp8 " : "bf16", seqs, T, context, partitions, double(us), gbps);
  };
  report("row", row_parts, time_us(false));
  if (supported) report("verify", verify_parts, time_us(true));
  QED_CUDA_CHECK(cudaEventDestroy(start));
  QED_CUDA_CHECK(cudaEventDestroy(stop));
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const auto devices = qed::cuda::list_devices();
  if (devices.empty()) {
    std::fprintf(stderr, "bench_decode_attention: no CUDA device\n");
    return 1;
  }
  int num_sms = 0;
  QED_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, 0));
  nlohmann::json results = nlohmann::json::array();
  try {
    for (int rows : o.rows) {
      for (int context : o.contexts) {
        if (o.verify >= 2) {
          bench_verify_case(o, rows, context, num_sms, results);
        } else {
          bench_case(o, rows, context, num_sms, results);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_decode_attention: %s\n", e.what());
    return 1;
  }
  if (!o.json_path.empty()) {
    std::ofstream(o.json_path) << nlohmann::json{{"bench", "decode_attention"}, {"results", results}}.dump(2) << "\n";
  }
  return 0;
}
