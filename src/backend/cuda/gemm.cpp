#include "backend/cuda/gemm.h"

#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/decode_gemm_plan.h"
#include "backend/cuda/decode_gemv.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/gemm_fallback.h"
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

// The largest power of two up to 256 that divides the address: what the heuristic may assume of a pointer.
int alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  int alignment = 256;
  while (alignment > 1 && address % uintptr_t(alignment) != 0) alignment /= 2;
  return alignment;
}

DeviceCaps current_device_caps() {
  int device = 0;
  QED_CUDA_CHECK(cudaGetDevice(&device));
  return device_caps(device);
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

Gemm::Gemm(size_t workspace_bytes) : Gemm(current_device_caps(), workspace_bytes) {}

Gemm::Gemm(const DeviceCaps& caps, size_t workspace_bytes) : workspace_(workspace_bytes), one_(sizeof(float)) {
  check(cublasLtCreate(&handle_), "create");
  const float one = 1.0f;
  one_.upload(&one, sizeof(one));
  fp8_mma_ = caps.sm() >= 89;
  multiprocessors_ = caps.multiprocessors;
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

bool Gemm::run_decode_silu_supported(const DecodeGemmOperands& o) const {
  static const bool enabled = env_flag("QED_FUSED_SILU", true);
  if (!enabled || o.rows < 1 || o.rows > kDecodeGemvMaxRows || o.f32_out) return false;
  if ((reinterpret_cast<uintptr_t>(o.x) | reinterpret_cast<uintptr_t>(o.w)) % 16 != 0) return false;
  const DecodeGemmPlan plan = decode_gemm_plan(o.type, o.rows, o.out, o.in);
  return plan.kernel == DecodeGemmKernel::DecodeGemv && decode_gemv_supports(o.type, o.rows, o.in, o.out) &&
         decode_gemv_silu_supports(plan.gemv_variant, o.out);
}

void Gemm::run_decode_silu(const DecodeGemmOperands& o, uint8_t* y_fp8, const float* y_fp8_scale, cudaStream_t stream) {
  if (!run_decode_silu_supported(o))
    fail("gemm: no fused SiLU-and-mul kernel for {} rows of {}x{}", o.rows, o.out, o.in);
  DecodeGemv g = decode_gemv_for(o, decode_gemm_plan(o.type, o.rows, o.out, o.in), /*pdl=*/true);
  g.silu_mul = true;
  g.y_fp8 = y_fp8;
  g.y_fp8_scale = y_fp8_scale;
  decode_gemv(g, stream);
}

Gemm::~Gemm() {
  for (auto& [key, plan] : plans_) {
    if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c) cublasLtMatrixLayoutDestroy(plan.c);
    if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
  }
  if (handle_) cublasLtDestroy(handle_);
}

// cuBLASLt is column-major: the row-major C[m×n] is the column-major Cᵀ[n×m] = op(B)ᵀ · op(A)ᵀ, and a row-major
// matrix viewed column-major is its transpose, so cuBLASLt's first operand ("A" below) is the stored B and its
// second the stored A, each transposed exactly when it is here. run(): B is the weight (transposed, K-major "TN").
Gemm::Plan& Gemm::plan_for(const PlanKey& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan plan;
  check(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  const cublasOperation_t op_first = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)), "transa");
  check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)),
        "transb");
  if (key.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
          "epilogue");
    const cudaDataType_t bias_type = CUDA_R_16BF;
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)),
          "bias type");
  }
  if (key.b == GemmType::F8_E4M3) {
    // Scale pointers are set before the heuristic query, as NVIDIA's FP8 sample does; run() re-points them per call.
    const void* one = one_.data();
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &one, sizeof(one)),
          "A scale pointer");
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &one, sizeof(one)),
          "B scale pointer");
  }
  const uint64_t b_rows = uint64_t(key.trans_b ? key.k : key.n), b_cols = uint64_t(key.trans_b ? key.n : key.k);
  const uint64_t a_rows = uint64_t(key.trans_a ? key.m : key.k), a_cols = uint64_t(key.trans_a ? key.k : key.m);
  check(cublasLtMatrixLayoutCreate(&plan.a, cuda_type(key.b), b_rows, b_cols, int64_t(b_rows)), "layout A");
  check(cublasLtMatrixLayoutCreate(&plan.b, cuda_type(key.a), a_rows, a_cols, int64_t(a_rows)), "layout B");
  check(cublasLtMatrixLayoutCreate(&plan.c, cuda_type(key.c), uint64_t(key.n), uint64_t(key.m), int64_t(key.n)),
        "layout C");

  cublasLtMatmulPreference_t preference = nullptr;
  check(cublasLtMatmulPreferenceCreate(&preference), "preference");
  const size_t workspace_bytes = workspace_.bytes();
  check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                             sizeof(workspace_bytes)),
        "workspace preference");
  const std::pair<cublasLtMatmulPreferenceAttributes_t, int> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c}};
  for (const auto& [attribute, bytes] : alignments) {
    const uint32_t value = uint32_t(bytes);
    if (bytes > 0) {
      check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)), "alignment preference");
    }
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  plan.status = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.c, plan.c, preference, 1,
                                               &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  plan.found = plan.status == CUBLAS_STATUS_SUCCESS && found > 0;
  if (plan.found) plan.algo = result.algo;
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
  Plan& plan = plan_for({.trans_b = true,
                         .m = rows,
                         .n = w.out_features,
                         .k = w.in_features,
                         .a = x_type,
                         .b = w.type,
                         .c = y_type,
                         .bias = bias != nullptr});
  if (!plan.found) {
    fail("cuBLASLt: no algorithm for a {}x{}x{} GEMM ({})", rows, w.out_features, w.in_features,
         status_name(plan.status));
  }
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

void Gemm::run_product(bool trans_a, bool trans_b, int m, int n, int k, const uint16_t* a, const uint16_t* b, float* c,
                       float beta, cudaStream_t stream) {
  if (m < 0 || n < 0 || k < 0) fail("gemm product: negative shape {}x{}x{}", m, n, k);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // An empty sum: C = beta · C.
    if (beta == 0.0f) QED_CUDA_CHECK(cudaMemsetAsync(c, 0, size_t(m) * size_t(n) * sizeof(float), stream));
    return;
  }
  if (!force_product_fallback_) {
    const Plan& plan = plan_for({.trans_a = trans_a,
                                 .trans_b = trans_b,
                                 .m = m,
                                 .n = n,
                                 .k = k,
                                 .c = GemmType::F32,
                                 .align_a = alignment_of(a),
                                 .align_b = alignment_of(b),
                                 .align_c = alignment_of(c)});
    if (plan.found) {
      const float alpha = 1.0f;
      check(cublasLtMatmul(handle_, plan.desc, &alpha, b, plan.a, a, plan.b, &beta, c, plan.c, c, plan.c, &plan.algo,
                           workspace_.data(), workspace_.bytes(), stream),
            "matmul");
      return;
    }
  }
  gemm_bf16_f32_fallback(trans_a, trans_b, m, n, k, a, b, c, beta, stream);
}

}  // namespace qed::cuda
