// The decode GEMM candidates on the 14B shape's linear layers, in GB/s of the bytes a GEMM must move (weight +
// activations + output, each once), per format × layer × rows:
//   plan    what the backend runs for it (decode_gemm_plan.h through Gemm::run_decode, else cuBLASLt)
//   main    the path before decode_gemv, as QED_DECODE_GEMM=cublaslt runs it: bf16 and FP8 cuBLASLt (the older bf16
//           GEMV main ran at 1-2 rows is gone: decode_gemv beat it by 0.4-10%); int8 the skinny kernel's measured
//           5..8-row variant, which main used from 1 row
//   dg_V, dg_V_bits  decode_gemv (decode_gemv.h) variant V (rows ≤ 4); _bits: FP8 codes decoded by bit operations
//   auto, tTsS  the skinny tensor-core kernel with the launcher's choice / T tiles per warp and S splits
//   peer    cuBLASLt (bf16; FP8 with per-tensor A/B scale pointers); int8: dequantize to bf16 + cuBLASLt into fp32
//           + the scale epilogue (LinearRunner's path above the decode rows)
// Each is timed as a CUDA graph of --launches launches rotating over enough weight copies that the set is ≥ 4× the
// L2 (what a decode step sees: no weight is re-read from L2), median of --repeats replays, after a warm-up; every
// number is per launch. Weights and activations are uniform random (never zeros: METHOD.md). Before timing, the
// plan's output is compared with the peer's (max |diff| / max |peer|, printed as `rel`). The device-to-device copy
// bandwidth (read + write) is measured first. Last: the summary per row, and the decode_gemm_plan entries the
// numbers argue for.
//   bench_skinny_gemm [--shapes qkv,o_proj,gate_up,down,lm_head] [--formats bf16,fp8,int8] [--rows 1,2,4,8,12,16]
//                     [--launches 20] [--repeats 10] [--time-limit 75] [--json PATH] [--skinny 0|1] [--pdl 0|1]
// --skinny 0 leaves out the skinny variants (a decode_gemv-only run); --pdl 1 launches decode_gemv with programmatic
// dependent launch inside the timed graphs (sm_90: back-to-back launches overlap their tails, as in a decode step).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/decode_gemm_plan.h"
#include "backend/cuda/decode_gemv.h"
#include "backend/cuda/device.h"
#include "backend/cuda/elementwise_kernels.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemv_kernels.h"
#include "backend/cuda/pdl.h"
#include "backend/cuda/quant_kernels.h"
#include "core/dtype.h"

namespace {

using qed::cuda::DeviceBuffer;

struct Shape {
  std::string name;
  int out, in;
  bool bias, f32_out;
};

// Qwen2.5-14B: hidden 5120, 40/8 heads of 128, intermediate 13824, vocab 152064; q/k/v and gate/up fused.
const std::vector<Shape> kShapes = {{"qkv", 7168, 5120, true, false},
                                    {"o_proj", 5120, 5120, false, false},
                                    {"gate_up", 27648, 5120, false, false},
                                    {"down", 5120, 13824, false, false},
                                    {"lm_head", 152064, 5120, false, true}};

struct Options {
  std::vector<std::string> shapes = {"qkv", "o_proj", "gate_up", "down", "lm_head"};
  std::vector<std::string> formats = {"bf16", "fp8", "int8"};
  std::vector<int> rows = {1, 2, 4, 8, 12, 16};
  int launches = 20, repeats = 10;
  double time_limit_s = 75;  // no new shape × format starts past it, so the summary always gets printed
  std::string json_path;
  bool skinny = true, pdl = false;
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream stream(list);
  for (std::string item; std::getline(stream, item, ',');) out.push_back(item);
  return out;
}

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "bench_skinny_gemm: %s\n", message.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--shapes") {
      o.shapes = split(value());
    } else if (arg == "--formats") {
      o.formats = split(value());
    } else if (arg == "--rows") {
      o.rows.clear();
      for (const std::string& r : split(value())) o.rows.push_back(std::stoi(r));
    } else if (arg == "--launches") {
      o.launches = std::stoi(value());
    } else if (arg == "--repeats") {
      o.repeats = std::stoi(value());
    } else if (arg == "--json") {
      o.json_path = value();
    } else if (arg == "--time-limit") {
      o.time_limit_s = std::stod(value());
    } else if (arg == "--skinny") {
      o.skinny = value() != "0";
    } else if (arg == "--pdl") {
      o.pdl = value() != "0";
    } else {
      usage_error("unknown argument " + arg);
    }
  }
  for (int r : o.rows) {
    if (r < 1 || r > qed::cuda::kSkinnyMaxRows) usage_error("--rows must be in 1..16");
  }
  for (const std::string& f : o.formats) {
    if (f != "bf16" && f != "fp8" && f != "int8") usage_error("unknown format " + f);
  }
  if (o.launches < 1 || o.repeats < 1) usage_error("--launches and --repeats must be positive");
  return o;
}

const Shape& shape_named(const std::string& name) {
  for (const Shape& s : kShapes) {
    if (s.name == name) return s;
  }
  usage_error("unknown shape " + name);
}

// Per-launch microseconds of launch(i) (i = 0, 1, ...): a graph of `launches` calls, median of `repeats` replays.
float time_us(cudaStream_t stream, const Options& o, int copies, const std::function<void(int)>& launch) {
  for (int i = 0; i < copies; ++i) launch(i);  // warm-up: module load, cuBLASLt plans, first touch of every copy
  QED_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph = nullptr;
  QED_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < o.launches; ++i) launch(i);
  QED_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  QED_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  QED_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  cudaEvent_t start, stop;
  QED_CUDA_CHECK(cudaEventCreate(&start));
  QED_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int r = 0; r < o.repeats; ++r) {
    QED_CUDA_CHECK(cudaEventRecord(start, stream));
    QED_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    QED_CUDA_CHECK(cudaEventRecord(stop, stream));
    QED_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    QED_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms * 1000.0f / float(o.launches));
  }
  QED_CUDA_CHECK(cudaEventDestroy(start));
  QED_CUDA_CHECK(cudaEventDestroy(stop));
  QED_CUDA_CHECK(cudaGraphExecDestroy(exec));
  QED_CUDA_CHECK(cudaGraphDestroy(graph));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double copy_bandwidth_gbs(cudaStream_t stream) {
  const size_t bytes = size_t(2) << 30;
  DeviceBuffer a(bytes), b(bytes);
  qed::cuda::fill_uniform_int8(a.as<int8_t>(), bytes, 1, stream);
  Options o;
  o.launches = 5;
  o.repeats = 5;
  const float us = time_us(stream, o, 1, [&](int) {
    QED_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, stream));
  });
  return 2.0 * double(bytes) / (double(us) * 1e-6) / 1e9;
}

float bf16_bits_to_float(uint16_t bits) {
  return qed::bf16_to_float(bits);
}

// max |a - b| / max |b| over the first n outputs of two device buffers (bf16 or fp32).
double relative_difference(const DeviceBuffer& a, const DeviceBuffer& b, size_t n, bool f32) {
  std::vector<float> x(n), y(n);
  if (f32) {
    a.download(x.data(), n * sizeof(float));
    b.download(y.data(), n * sizeof(float));
  } else {
    std::vector<uint16_t> xa(n), yb(n);
    a.download(xa.data(), n * sizeof(uint16_t));
    b.download(yb.data(), n * sizeof(uint16_t));
    std::transform(xa.begin(), xa.end(), x.begin(), bf16_bits_to_float);
    std::transform(yb.begin(), yb.end(), y.begin(), bf16_bits_to_float);
  }
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(x[i]) - double(y[i]));
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    scale = std::max(scale, std::fabs(double(y[i])));
  }
  return scale > 0.0 ? diff / scale : diff;
}

// The skinny variants timed: (tiles_per_warp, splits, persistent grid); {0, 0} is the launcher's own choice.
struct Variant {
  int tiles, splits;
  bool persistent = false;
};
const std::vector<Variant> kVariants = {{0, 0},       {1, 1},       {2, 1},       {4, 1},       {1, 2},
                                        {2, 2},       {2, 4},       {4, 1, true}, {2, 2, true}, {2, 4, true},
                                        {1, 4, true}, {4, 4, true}, {2, 8, true}};

std::string variant_name(const Variant& v) {
  if (v.tiles == 0) return "auto";
  char name[32];
  std::snprintf(name, sizeof(name), "t%ds%d%s", v.tiles, v.splits, v.persistent ? "p" : "");
  return name;
}

// One shape × format × rows: microseconds per candidate, in the order timed ("plan" = what Gemm::run /
// LinearRunner run for it, decode_gemm_plan.h; "main" = the path before decode_gemv; "peer" = cuBLASLt, int8: dequant
// + cuBLASLt). A variant that cannot run (its split-K workspace exceeds Gemm's) is left out.
struct Row {
  std::string shape, format;
  int rows;
  std::vector<std::pair<std::string, float>> us;
  double bytes, rel;
  float time(const std::string& name) const {
    for (const auto& [n, t] : us) {
      if (n == name) return t;
    }
    return NAN;
  }
};

void bench_format(const Options& o, const Shape& s, const std::string& format, cudaStream_t stream,
                  qed::cuda::Gemm& gemm, std::vector<Row>& rows_out) {
  const bool bf16 = format == "bf16", fp8 = format == "fp8";
  const size_t elements = size_t(s.out) * size_t(s.in);
  const size_t weight_bytes = elements * (bf16 ? 2 : 1);
  const size_t l2_bytes = 64u << 20;
  const int copies = int(std::min<size_t>(16, (4 * l2_bytes + weight_bytes - 1) / weight_bytes));
  std::vector<std::unique_ptr<DeviceBuffer>> weights;
  DeviceBuffer staging(bf16 ? 0 : elements * sizeof(uint16_t));
  const float w_scale = 0.02f / 448.0f, x_scale = 4.0f / 448.0f;
  DeviceBuffer d_w_scale(sizeof(float)), d_x_scale(sizeof(float));
  d_w_scale.upload(&w_scale, sizeof(w_scale));
  d_x_scale.upload(&x_scale, sizeof(x_scale));
  for (int c = 0; c < copies; ++c) {
    weights.push_back(std::make_unique<DeviceBuffer>(weight_bytes));
    if (bf16) {
      qed::cuda::fill_uniform_bf16(weights.back()->as<uint16_t>(), elements, 100 + c, -0.02f, 0.02f, stream);
    } else if (fp8) {
      qed::cuda::fill_uniform_bf16(staging.as<uint16_t>(), elements, 100 + c, -0.02f, 0.02f, stream);
      qed::cuda::quantize_fp8_bf16(staging.as<uint16_t>(), elements, d_w_scale.as<float>(),
                                   weights.back()->as<uint8_t>(), stream);
    } else {
      qed::cuda::fill_uniform_int8(weights.back()->as<int8_t>(), elements, 100 + c, stream);
    }
  }
  std::vector<float> scales(size_t(s.out));
  for (int j = 0; j < s.out; ++j) scales[size_t(j)] = (0.5f + float(j % 13) / 13.0f) * 0.02f / 127.0f;
  DeviceBuffer d_scales(scales.size() * sizeof(float));
  d_scales.upload(scales.data(), scales.size() * sizeof(float));
  DeviceBuffer bias(size_t(s.out) * sizeof(uint16_t));
  qed::cuda::fill_uniform_bf16(bias.as<uint16_t>(), size_t(s.out), 7, -0.5f, 0.5f, stream);
  const int max_rows = *std::max_element(o.rows.begin(), o.rows.end());
  DeviceBuffer x(size_t(max_rows) * s.in * sizeof(uint16_t)), x_q(size_t(max_rows) * s.in);
  qed::cuda::fill_uniform_bf16(x.as<uint16_t>(), size_t(max_rows) * s.in, 9, -2.0f, 2.0f, stream);
  qed::cuda::quantize_fp8_bf16(x.as<uint16_t>(), size_t(max_rows) * s.in, d_x_scale.as<float>(), x_q.as<uint8_t>(),
                               stream);
  const size_t y_elem = s.f32_out ? 4 : 2;
  DeviceBuffer y(size_t(max_rows) * s.out * y_elem), y_peer(size_t(max_rows) * s.out * y_elem);
  // int8's peer: the bf16 copy of the weight and the fp32 product before the scale epilogue.
  DeviceBuffer dequant(format == "int8" ? elements * sizeof(uint16_t) : 0);
  DeviceBuffer acc(format == "int8" ? size_t(max_rows) * s.out * sizeof(float) : 0);
  const bool f32_out = s.f32_out && format == "bf16";  // quantized formats write bf16 (the lm_head stays bf16)
  const void* d_bias = s.bias ? bias.data() : nullptr;

  for (int rows : o.rows) {
    auto skinny = [&](const Variant& v, int copy, void* out) {
      qed::cuda::SkinnyGemm g;
      g.x = fp8 ? x_q.data() : x.data();
      g.w = weights[size_t(copy % copies)]->data();
      g.type = bf16 ? qed::cuda::SkinnyWeight::Bf16
                    : (fp8 ? qed::cuda::SkinnyWeight::Fp8E4m3 : qed::cuda::SkinnyWeight::Int8);
      g.x_scale = fp8 ? d_x_scale.as<float>() : nullptr;
      g.w_scales = bf16 ? nullptr : (fp8 ? d_w_scale.as<float>() : d_scales.as<float>());
      g.bias = static_cast<const uint16_t*>(d_bias);
      g.y = out;
      g.f32_out = f32_out;
      g.rows = rows;
      g.out = s.out;
      g.in = s.in;
      g.tiles_per_warp = v.tiles;
      g.splits = v.splits;
      g.persistent = v.persistent;
      gemm.run_skinny(g, stream);
    };
    auto peer = [&](int copy, void* out) {
      const void* w = weights[size_t(copy % copies)]->data();
      const qed::cuda::GemmType y_type = f32_out ? qed::cuda::GemmType::F32 : qed::cuda::GemmType::BF16;
      if (bf16) {
        const qed::cuda::GemmWeight gw{w, qed::cuda::GemmType::BF16, s.out, s.in, nullptr};
        gemm.run_cublaslt(x.data(), qed::cuda::GemmType::BF16, gw, d_bias, out, y_type, rows, stream);
      } else if (fp8) {
        const qed::cuda::GemmWeight gw{w, qed::cuda::GemmType::F8_E4M3, s.out, s.in, d_w_scale.as<float>()};
        gemm.run_cublaslt(x_q.data(), qed::cuda::GemmType::F8_E4M3, gw, d_bias, out, y_type, rows, stream,
                          d_x_scale.as<float>());
      } else {
        qed::cuda::int8_to_bf16(static_cast<const int8_t*>(w), elements, dequant.as<uint16_t>(), stream);
        const qed::cuda::GemmWeight gw{dequant.data(), qed::cuda::GemmType::BF16, s.out, s.in, nullptr};
        gemm.run_cublaslt(x.data(), qed::cuda::GemmType::BF16, gw, nullptr, acc.data(), qed::cuda::GemmType::F32, rows,
                          stream);
        qed::cuda::scale_rows_to_bf16(acc.as<float>(), nullptr, d_scales.as<float>(),
                                      static_cast<const uint16_t*>(d_bias), static_cast<uint16_t*>(out), rows, s.out,
                                      stream);
      }
    };
    const qed::cuda::SkinnyWeight type =
        bf16 ? qed::cuda::SkinnyWeight::Bf16 : (fp8 ? qed::cuda::SkinnyWeight::Fp8E4m3 : qed::cuda::SkinnyWeight::Int8);
    auto planned = [&](int copy, void* out) {
      if (format == "int8") {  // LinearRunner's int8 decode path
        qed::cuda::DecodeGemmOperands ops;
        ops.x = x.data();
        ops.w = weights[size_t(copy % copies)]->data();
        ops.type = type;
        ops.w_scales = d_scales.as<float>();
        ops.bias = static_cast<const uint16_t*>(d_bias);
        ops.y = out;
        ops.rows = rows;
        ops.out = s.out;
        ops.in = s.in;
        gemm.run_decode(ops, stream);
        return;
      }
      const void* w = weights[size_t(copy % copies)]->data();
      const qed::cuda::GemmType y_type = f32_out ? qed::cuda::GemmType::F32 : qed::cuda::GemmType::BF16;
      const qed::cuda::GemmType t = bf16 ? qed::cuda::GemmType::BF16 : qed::cuda::GemmType::F8_E4M3;
      const qed::cuda::GemmWeight gw{w, t, s.out, s.in, fp8 ? d_w_scale.as<float>() : nullptr};
      gemm.run(fp8 ? x_q.data() : x.data(), t, gw, d_bias, out, y_type, rows, stream,
               fp8 ? d_x_scale.as<float>() : nullptr);
    };
    Row row{s.name, format, rows, {}, 0, 0};
    planned(0, y.data());
    peer(0, y_peer.data());
    QED_CUDA_CHECK(cudaStreamSynchronize(stream));
    row.rel = relative_difference(y, y_peer, size_t(rows) * s.out, f32_out);
    row.us.emplace_back("plan", time_us(stream, o, copies, [&](int i) { planned(i, y.data()); }));
    // The path before decode_gemv: bf16 and FP8 on cuBLASLt, int8 on the skinny variant the table has for 5..8
    // rows (main's from 1 row).
    if (format == "int8") {
      const qed::cuda::DecodeGemmPlan main_plan = qed::cuda::decode_gemm_plan(type, 5, s.out, s.in);
      const Variant v{main_plan.tiles_per_warp, main_plan.splits, main_plan.persistent};
      row.us.emplace_back("main", time_us(stream, o, copies, [&](int i) { skinny(v, i, y.data()); }));
    } else {
      row.us.emplace_back("main", time_us(stream, o, copies, [&](int i) { peer(i, y_peer.data()); }));
    }
    if (rows <= qed::cuda::kDecodeGemvMaxRows) {
      for (int variant = 0; variant < qed::cuda::kDecodeGemvVariantCount; ++variant) {
        for (bool bits : fp8 ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
          auto launch = [&](int copy, void* out) {
            qed::cuda::DecodeGemmOperands ops;
            ops.x = fp8 ? x_q.data() : x.data();
            ops.w = weights[size_t(copy % copies)]->data();
            ops.type = type;
            ops.x_scale = fp8 ? d_x_scale.as<float>() : nullptr;
            ops.w_scales = bf16 ? nullptr : (fp8 ? d_w_scale.as<float>() : d_scales.as<float>());
            ops.bias = static_cast<const uint16_t*>(d_bias);
            ops.y = out;
            ops.f32_out = f32_out;
            ops.rows = rows;
            ops.out = s.out;
            ops.in = s.in;
            qed::cuda::DecodeGemmPlan p;
            p.kernel = qed::cuda::DecodeGemmKernel::DecodeGemv;
            p.gemv_variant = variant;
            p.fp8_bits = bits;
            qed::cuda::decode_gemv(qed::cuda::decode_gemv_for(ops, p, o.pdl), stream);
          };
          const std::string name = "dg_" + qed::cuda::decode_gemv_variant_name(variant) + (bits ? "_bits" : "");
          launch(0, y.data());
          peer(0, y_peer.data());  // timing "main" may have left another copy's product there
          QED_CUDA_CHECK(cudaStreamSynchronize(stream));
          const double rel = relative_difference(y, y_peer, size_t(rows) * s.out, f32_out);
          if (!(rel < 1e-2)) std::printf("  %s: rel %.2e vs the peer (wrong result?)\n", name.c_str(), rel);
          row.us.emplace_back(name, time_us(stream, o, copies, [&](int i) { launch(i, y.data()); }));
        }
      }
    }
    for (const Variant& v : o.skinny ? kVariants : std::vector<Variant>{}) {
      try {
        skinny(v, 0, y.data());  // a split whose partials exceed Gemm's workspace throws here, before any capture
      } catch (const std::exception&) {
        continue;
      }
      row.us.emplace_back(variant_name(v), time_us(stream, o, copies, [&](int i) { skinny(v, i, y.data()); }));
    }
    row.us.emplace_back("peer", time_us(stream, o, copies, [&](int i) { peer(i, y_peer.data()); }));
    const size_t x_bytes = size_t(rows) * s.in * (fp8 ? 1 : 2);
    row.bytes = double(weight_bytes + x_bytes + size_t(rows) * s.out * (f32_out ? 4 : 2));
    auto gbs = [&](float us) { return row.bytes / (double(us) * 1e-6) / 1e9; };
    std::printf("%-8s %-5s rows %2d:", s.name.c_str(), format.c_str(), rows);
    for (const auto& [name, us] : row.us) std::printf(" %s %.1f us %.0f GB/s |", name.c_str(), double(us), gbs(us));
    std::printf(" rel %.2e\n", row.rel);
    std::fflush(stdout);
    rows_out.push_back(row);
  }
}

// A candidate's name as a decode_gemm_plan.cpp table entry, or "" for one the table cannot name (plan, main, int8's
// dequantizing peer).
std::string plan_expression(const std::string& name, const std::string& format) {
  if (name == "plan" || name == "main") return "";
  if (name == "peer") return format == "int8" ? "" : "cublaslt()";
  if (name == "auto") return "skinny(0, 0)";
  if (name.rfind("dg_", 0) == 0) {
    const bool bits = name.size() > 5 && name.compare(name.size() - 5, 5, "_bits") == 0;
    const std::string variant = name.substr(3, name.size() - 3 - (bits ? 5 : 0));
    return "gemv(" + std::to_string(qed::cuda::decode_gemv_variant_index(variant.c_str())) + (bits ? ", true" : "") +
           ")";
  }
  int tiles = 0, splits = 0;
  char persistent = 0;
  const int n = std::sscanf(name.c_str(), "t%ds%d%c", &tiles, &splits, &persistent);
  if (n < 2) return "";
  return "skinny(" + std::to_string(tiles) + ", " + std::to_string(splits) + (n == 3 ? ", true" : "") + ")";
}

// decode_gemm_plan.cpp's kFewRows entries (1, 2, 3-4 rows) the numbers argue for: per shape × format the fastest
// candidate the table can name at 1, 2 and 4 rows (3 where 4 was not run), with its GB/s and main's.
void print_few_rows_entries(const std::vector<Row>& rows) {
  std::printf("\nsuggested kFewRows entries (decode_gemm_plan.cpp; rows 1 | 2 | 4):\n");
  std::map<std::pair<std::string, std::string>, std::map<int, const Row*>> by_layer;
  std::vector<std::pair<std::string, std::string>> order;
  for (const Row& r : rows) {
    const auto key = std::make_pair(r.shape, r.format);
    if (!by_layer.count(key)) order.push_back(key);
    by_layer[key][r.rows] = &r;
  }
  for (const auto& key : order) {
    const auto& per_rows = by_layer[key];
    std::string entries, comment;
    int out = 0, in = 0;
    for (int want : {1, 2, 4}) {
      auto it = per_rows.find(want);
      if (it == per_rows.end() && want == 4) it = per_rows.find(3);
      std::string expression = "?";
      if (it != per_rows.end()) {
        const Row& r = *it->second;
        const Shape& s = shape_named(r.shape);
        out = s.out, in = s.in;
        std::string best;
        float best_us = INFINITY;
        for (const auto& [name, us] : r.us) {
          if (!plan_expression(name, r.format).empty() && us < best_us) best = name, best_us = us;
        }
        if (!best.empty()) {
          expression = plan_expression(best, r.format);
          auto gbs = [&](float us) { return r.bytes / (double(us) * 1e-6) / 1e9; };
          char note[160];
          std::snprintf(note, sizeof(note), " r%d %s %.1f us %.0f GB/s (main %.0f);", r.rows, best.c_str(),
                        double(best_us), gbs(best_us), gbs(r.time("main")));
          comment += note;
        }
      }
      entries += ", " + expression;
    }
    const char* type = key.second == "bf16" ? "Bf16" : key.second == "fp8" ? "Fp8E4m3" : "Int8";
    std::printf("    {SkinnyWeight::%s, %d, %d%s},  // %s:%s\n", type, out, in, entries.c_str(), key.first.c_str(),
                comment.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const std::vector<qed::cuda::DeviceInfo> devices = qed::cuda::list_devices();
  if (devices.empty()) {
    std::fprintf(stderr, "bench_skinny_gemm: no CUDA device\n");
    return 1;
  }
  const bool has_fp8 = devices[0].sm_major * 10 + devices[0].sm_minor >= 89;
  cudaStream_t stream = nullptr;
  QED_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double copy_gbs = copy_bandwidth_gbs(stream);
  std::printf("%s, %d SMs: device-to-device copy %.0f GB/s (read + write)\n", devices[0].name.c_str(),
              devices[0].multiprocessors, copy_gbs);
  qed::cuda::set_pdl_enabled(o.pdl && devices[0].sm_major >= 9);
  std::printf("programmatic dependent launch: %s\n", qed::cuda::pdl_enabled() ? "on" : "off");
  qed::cuda::Gemm gemm;
  std::vector<Row> rows;
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& name : o.shapes) {
    const Shape& s = shape_named(name);
    for (const std::string& format : o.formats) {
      if (format == "fp8" && !has_fp8) continue;
      if (format != "bf16" && s.name == "lm_head") continue;  // the lm_head stays bf16 in quantized checkpoints
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (elapsed > o.time_limit_s) {
        std::printf("%s %s: skipped, past --time-limit %.0f s\n", s.name.c_str(), format.c_str(), o.time_limit_s);
        continue;
      }
      bench_format(o, s, format, stream, gemm, rows);
    }
  }
  QED_CUDA_CHECK(cudaStreamDestroy(stream));

  // Per row: the fastest candidate, the plan (what the backend runs), main's path and the peer.
  std::printf(
      "\nshape    fmt   rows | fastest                us   GB/s | plan        us   GB/s | main        us   GB/s | "
      "peer        us   GB/s | plan/fastest | rel\n");
  nlohmann::json results = nlohmann::json::array();
  auto fastest = [](const Row& r) {
    size_t best = 0;
    for (size_t i = 1; i < r.us.size(); ++i) {
      if (r.us[i].second < r.us[best].second) best = i;
    }
    return r.us[best];
  };
  for (const Row& r : rows) {
    auto gbs = [&](float us) { return r.bytes / (double(us) * 1e-6) / 1e9; };
    const auto [best_name, best_us] = fastest(r);
    const float plan_us = r.time("plan"), main_us = r.time("main"), peer_us = r.time("peer");
    std::printf("%-8s %-5s %4d | %-14s %8.1f %6.0f | %8.1f %6.0f | %8.1f %6.0f | %8.1f %6.0f | %6.2f | %.1e\n",
                r.shape.c_str(), r.format.c_str(), r.rows, best_name.c_str(), double(best_us), gbs(best_us),
                double(plan_us), gbs(plan_us), double(main_us), gbs(main_us), double(peer_us), gbs(peer_us),
                double(plan_us / best_us), r.rel);
    nlohmann::json times = nlohmann::json::object();
    for (const auto& [name, us] : r.us) times[name] = us;
    results.push_back({{"shape", r.shape},
                       {"format", r.format},
                       {"rows", r.rows},
                       {"bytes", r.bytes},
                       {"us", times},
                       {"rel_diff_vs_peer", r.rel}});
  }
  // The decode_gemm_plan.cpp entries these numbers argue for: per shape × format, over the rows of one n8 tile (≤ 8)
  // and of two, the candidate with the least total time over the rows every candidate ran.
  std::printf("\nsuggested decode_gemm_plan entries (least total time over rows <= 8 | rows > 8):\n");
  for (size_t i = 0; i < rows.size();) {
    size_t j = i;
    std::map<std::string, double> few, many;
    std::map<std::string, int> few_n, many_n;
    int few_rows = 0, many_rows = 0;
    for (; j < rows.size() && rows[j].shape == rows[i].shape && rows[j].format == rows[i].format; ++j) {
      const bool is_few = rows[j].rows <= 8;
      (is_few ? few_rows : many_rows) += 1;
      for (const auto& [name, us] : rows[j].us) {
        if (name == "plan") continue;
        (is_few ? few : many)[name] += us;
        (is_few ? few_n : many_n)[name] += 1;
      }
    }
    auto pick = [](const std::map<std::string, double>& m, const std::map<std::string, int>& n, int count) {
      std::string best = "-";
      for (const auto& [name, total] : m) {
        if (n.at(name) == count && (best == "-" || total < m.at(best))) best = name;
      }
      return best;
    };
    std::printf("  %-8s %-5s %-6s | %-6s\n", rows[i].shape.c_str(), rows[i].format.c_str(),
                pick(few, few_n, few_rows).c_str(), pick(many, many_n, many_rows).c_str());
    i = j;
  }
  print_few_rows_entries(rows);
  if (!o.json_path.empty()) {
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    const nlohmann::json document = {{"bench", "skinny_gemm"},
                                     {"timestamp", stamp},
                                     {"device", devices[0].name},
                                     {"copy_gbs", copy_gbs},
                                     {"launches", o.launches},
                                     {"repeats", o.repeats},
                                     {"peers",
                                      {{"bf16", "cuBLASLt bf16"},
                                       {"fp8", "cuBLASLt FP8 per-tensor scales"},
                                       {"int8", "int8_to_bf16 + cuBLASLt bf16 -> fp32 + scale_rows_to_bf16"}}},
                                     {"results", results}};
    std::ofstream(o.json_path) << document.dump(2) << "\n";
  }
  return 0;
}
