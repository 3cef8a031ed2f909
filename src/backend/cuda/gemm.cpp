#include "backend/cuda/gemm.h"

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/decode_gemm_plan.h"
#include "backend/cuda/decode_gemv.h"
#include "backend/cuda/gemv_kernels.h"
#include "core/error.h"

namespace qed::cuda {
namespace {

// Split-K counters: one per CTA along the output features, enough for 16 × 16384 features (the 14B lm_head's
// 152064 takes no split).
constexpr int kSkinnyCounters = 16384;

// cublasGetStatusName lives in libcublas, which nothing else here needs: name the common codes ourselves.
const char* status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "not supported";
    default:
      return "error";
  }
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt {}: {} (status {})", what, status_name(status), int(status));
}

cudaDataType_t cuda_type(GemmType type) {
  switch (type) {
    case GemmType::BF16:
      return CUDA_R_16BF;
    case GemmType::F32:
      return CUDA_R_32F;
    case GemmType::F8_E4M3:
      return CUDA_R_8F_E4M3;
  }
  fail("gemm: unknown element type");
}

void validate(GemmType x_type, const GemmWeight& w, const void* bias, GemmType y_type) {
  if (w.out_features <= 0 || w.in_features <= 0) fail("gemm: weight of shape {}x{}", w.out_features, w.in_features);
  if (y_type == GemmType::F8_E4M3) fail("gemm: the output is bf16 or fp32");
  const bool fp8 = w.type == GemmType::F8_E4M3 || x_type == GemmType::F8_E4M3;
  if (fp8) {
    if (w.type != x_type) fail("gemm: an fp8 GEMM takes fp8 weights and fp8 activations");
    if (w.in_features % 16 != 0 || w.out_features % 16 != 0) {
      fail("gemm: fp8 needs in/out features that are multiples of 16, got {}x{}", w.out_features, w.in_features);
    }
    if (bias && y_type != GemmType::BF16) fail("gemm: an fp8 GEMM with a bias writes bf16");
  } else if (x_type != GemmType::BF16 || w.type != GemmType::BF16) {
    fail("gemm: bf16 x bf16 or fp8 x fp8 only");
  }
}

}  // namespace

Gemm::Gemm(size_t workspace_bytes) : workspace_(workspace_bytes), one_(sizeof(float)) {
  check(cublasLtCreate(&handle_), "create");
  const float one = 1.0f;
  one_.upload(&one, sizeof(one));
  int device = 0, major = 0, minor = 0;
  QED_CUDA_CHECK(cudaGetDevice(&device));
  QED_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  QED_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  fp8_mma_ = major * 10 + minor >= 89;
  QED_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device));
  skinny_counters_ = DeviceBuffer(kSkinnyCounters * sizeof(unsigned));
  QED_CUDA_CHECK(cudaMemset(skinny_counters_.data(), 0, skinny_counters_.bytes()));
}

void Gemm::run_skinny(SkinnyGemm g, cudaStream_t stream) {
  // The cuBLASLt workspace doubles as the split-K partials: launches on one stream never overlap.
  g.workspace = workspace_.as<float>();
  g.workspace_bytes = workspace_.bytes();
  g.counters = skinny_counters_.as<unsigned>();
  g.counter_count = kSkinnyCounters;
  g.multiprocessors = multiprocessors_;
  skinny_gemm(g, stream);
}

bool Gemm::run_decode(const DecodeGemmOperands& o, cudaStream_t stream) {
  if (o.rows < 1 || o.rows > kSkinnyMaxRows) return false;
  const DecodeGemmPlan plan = decode_gemm_plan(o.type, o.rows, o.out, o.in);
  const bool aligned = (reinterpret_cast<uintptr_t>(o.x) | reinterpret_cast<uintptr_t>(o.w)) % 16 == 0;
  if (aligned) {
    switch (plan.kernel) {
      case DecodeGemmKernel::DecodeGemv:
        if (decode_gemv_supports(o.type, o.rows, o.in, o.out)) {
          decode_gemv(decode_gemv_for(o, plan, /*pdl=*/true), stream);
          return true;
        }
        break;
      case DecodeGemmKernel::Skinny:
        if ((o.type != SkinnyWeight::Fp8E4m3 || fp8_mma_) && skinny_gemm_supports(o.type, o.rows, o.in, o.out)) {
          run_skinny(skinny_gemm_for(o, plan), stream);
          return true;
        }
        break;
      case DecodeGemmKernel::Cublaslt:
        break;
    }
  }
  if (o.type != SkinnyWeight::Int8) return false;
  // skinny_gemm refuses what it cannot take with a one-line error.
  run_skinny(skinny_gemm_for(o, plan.kernel == DecodeGemmKernel::Skinny ? plan : DecodeGemmPlan{}), stream);
  return true;
}

Gemm::~Gemm() {
  for (auto& [key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
  }
  if (handle_) cublasLtDestroy(handle_);
}

Gemm::Plan& Gemm::plan_for(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  const auto [rows, out, in, x_type, w_type, y_type, has_bias] = key;
  Plan plan;
  // Column-major view: C (out × rows) = op(A) · B with A the row-major weight seen as in × out (so op = T) and B the
  // row-major activations seen as in × rows.
  check(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)),
        "transa");
  check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none)), "transb");
  if (has_bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
          "epilogue");
    const cudaDataType_t bias_type = CUDA_R_16BF;
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)),
          "bias type");
  }
  if (w_type == GemmType::F8_E4M3) {
    // Scale pointers are set before the heuristic query, as NVIDIA's FP8 sample does; run() re-points them per call.
    const void* one = one_.data();
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &one, sizeof(one)),
          "A scale pointer");
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &one, sizeof(one)),
          "B scale pointer");
  }
  check(cublasLtMatrixLayoutCreate(&plan.a, cuda_type(w_type), uint64_t(in), uint64_t(out), int64_t(in)), "layout A");
  check(cublasLtMatrixLayoutCreate(&plan.b, cuda_type(x_type), uint64_t(in), uint64_t(rows), int64_t(in)), "layout B");
  check(cublasLtMatrixLayoutCreate(&plan.c, cuda_type(y_type), uint64_t(out), uint64_t(rows), int64_t(out)),
        "layout C");

  cublasLtMatmulPreference_t preference = nullptr;
  check(cublasLtMatmulPreferenceCreate(&preference), "preference");
  const size_t workspace_bytes = workspace_.bytes();
  check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                             sizeof(workspace_bytes)),
        "workspace preference");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                                               preference, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
    fail("cuBLASLt: no algorithm for a {}x{}x{} GEMM ({})", rows, out, in, status_name(status));
  }
  plan.algo = result.algo;
  return plans_.emplace(key, plan).first->second;
}

void Gemm::run(const void* x, GemmType x_type, const GemmWeight& w, const void* bias, void* y, GemmType y_type,
               int rows, cudaStream_t stream, const float* x_scale) {
  if (rows <= 0) return;
  validate(x_type, w, bias, y_type);
  const bool fp8 = w.type == GemmType::F8_E4M3;
  DecodeGemmOperands o;
  o.x = x;
  o.w = w.data;
  o.type = fp8 ? SkinnyWeight::Fp8E4m3 : SkinnyWeight::Bf16;
  if (fp8) {
    o.x_scale = x_scale;
    o.w_scales = w.scale ? w.scale : one_.as<float>();
  }
  o.bias = static_cast<const uint16_t*>(bias);
  o.y = y;
  o.f32_out = y_type == GemmType::F32;
  o.rows = rows;
  o.out = w.out_features;
  o.in = w.in_features;
  if (run_decode(o, stream)) return;
  run_cublaslt(x, x_type, w, bias, y, y_type, rows, stream, x_scale);
}

void Gemm::run_cublaslt(const void* x, GemmType x_type, const GemmWeight& w, const void* bias, void* y, GemmType y_type,
                        int rows, cudaStream_t stream, const float* x_scale) {
  if (rows <= 0) return;
  validate(x_type, w, bias, y_type);
  const bool fp8 = w.type == GemmType::F8_E4M3;
  Plan& plan = plan_for(Key{rows, w.out_features, w.in_features, x_type, w.type, y_type, bias != nullptr});
  if (bias) {
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
          "bias pointer");
  }
  if (fp8) {
    // A is the weight, B the activations (see plan_for); both pointers are set on every call because the plan is
    // shared by every layer of this shape.
    const void* a_scale = w.scale ? w.scale : one_.data();
    const void* b_scale = x_scale ? x_scale : one_.data();
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)),
          "A scale pointer");
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)),
          "B scale pointer");
  }
  const float alpha = 1.0f, beta = 0.0f;
  check(cublasLtMatmul(handle_, plan.desc, &alpha, w.data, plan.a, x, plan.b, &beta, y, plan.c, y, plan.c, &plan.algo,
                       workspace_.data(), workspace_.bytes(), stream),
        "matmul");
}

}  // namespace qed::cuda
