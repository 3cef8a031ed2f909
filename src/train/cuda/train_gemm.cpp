#include "train/cuda/train_gemm.h"

#include "backend/cuda/cuda_check.h"
#include "core/error.h"

namespace qed::train::gpu {
namespace {

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("train gemm: cuBLASLt {} failed (status {})", what, int(status));
}

int alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  int alignment = 256;
  while (alignment > 1 && address % uintptr_t(alignment) != 0) alignment /= 2;
  return alignment;
}

}  // namespace

TrainGemm::TrainGemm(size_t workspace_bytes) : workspace_(workspace_bytes) {
  check(cublasLtCreate(&handle_), "create");
}

TrainGemm::~TrainGemm() {
  for (auto& [key, plan] : plans_) {
    if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
    if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c) cublasLtMatrixLayoutDestroy(plan.c);
  }
  if (handle_) cublasLtDestroy(handle_);
}

// cuBLASLt is column-major: the row-major C[M×N] is the column-major Cᵀ[N×M] = op(B)ᵀ · op(A)ᵀ, and a row-major
// matrix viewed column-major is its transpose, so cuBLASLt's first operand is the stored B and its second the
// stored A, each transposed exactly when it is transposed here.
TrainGemm::Plan& TrainGemm::plan_for(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  const auto [trans_a, trans_b, m, n, k, align_a, align_b, align_c] = key;
  Plan plan;
  check(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)), "transa");
  check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)),
        "transb");
  const uint64_t b_rows = uint64_t(trans_b ? k : n), b_cols = uint64_t(trans_b ? n : k);
  const uint64_t a_rows = uint64_t(trans_a ? m : k), a_cols = uint64_t(trans_a ? k : m);
  check(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16BF, b_rows, b_cols, int64_t(b_rows)), "layout");
  check(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16BF, a_rows, a_cols, int64_t(a_rows)), "layout");
  check(cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, uint64_t(n), uint64_t(m), int64_t(n)), "layout");
  cublasLtMatmulPreference_t preference = nullptr;
  check(cublasLtMatmulPreferenceCreate(&preference), "preference");
  const uint64_t workspace = workspace_.bytes();
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                       sizeof(workspace));
  const uint32_t first_align = uint32_t(align_b), second_align = uint32_t(align_a), c_align = uint32_t(align_c);
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &first_align,
                                       sizeof(first_align));
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &second_align,
                                       sizeof(second_align));
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c_align,
                                       sizeof(c_align));
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c_align,
                                       sizeof(c_align));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.c, plan.c,
                                                               preference, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  plan.cublaslt = status == CUBLAS_STATUS_SUCCESS && found > 0;
  if (plan.cublaslt) plan.algo = result.algo;
  return plans_.emplace(key, plan).first->second;
}

void TrainGemm::run(bool trans_a, bool trans_b, int m, int n, int k, const uint16_t* a, const uint16_t* b, float* c,
                    float beta, cudaStream_t stream) {
  if (m < 0 || n < 0 || k < 0) fail("train gemm: negative shape {}x{}x{}", m, n, k);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // An empty sum: C = beta · C.
    if (beta == 0.0f) QED_CUDA_CHECK(cudaMemsetAsync(c, 0, size_t(m) * size_t(n) * sizeof(float), stream));
    return;
  }
  if (!force_fallback_) {
    const Plan& plan = plan_for({trans_a, trans_b, m, n, k, alignment_of(a), alignment_of(b), alignment_of(c)});
    if (plan.cublaslt) {
      const float alpha = 1.0f;
      check(cublasLtMatmul(handle_, plan.desc, &alpha, b, plan.a, a, plan.b, &beta, c, plan.c, c, plan.c, &plan.algo,
                           workspace_.data(), workspace_.bytes(), stream),
            "matmul");
      return;
    }
  }
  gemm_bf16_f32_simple(trans_a, trans_b, m, n, k, a, b, c, beta, stream);
}

}  // namespace qed::train::gpu
