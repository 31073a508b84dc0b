// The end of a decode step in one call: fp32 logits of a few rows of the residual stream.
//
// Registered as torch.ops.sagellm.final_logits(x, rows, norm_w, eps, lm_head, packed, out):
//   x        [T, hidden]  contiguous, float32 or bfloat16 (the stream after the last layer)
//   rows     [R] int64    the rows to score, 1 <= R <= 16, each in [0, T)
//   norm_w   [hidden]     the final RMSNorm's weight, x's dtype
//   lm_head  [V, hidden]  contiguous, x's dtype
//   packed   lm_head packed by pack_gemm (gemm_packed.cpp), for the GEMM to take instead of
//            the GEMV, or empty
//   out      [R, V]       contiguous float32
// out[r] = float(lm_head . RMSNorm(x[rows[r]])): the same kernels and roundings as the ops it
// replaces (x[rows], the rms_norm op, the GEMV or packed GEMM into x's dtype, .float()), so
// the same bits.
// Between two weight streams each Python-level op of a step costs 60-100 us on 2 Zen 4 cores
// (code and data evicted from the caches); these were five.
#include "ops.h"

#include <torch/library.h>

#include <cstring>

namespace {

void final_logits(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& norm_w,
                  double eps, const at::Tensor& lm_head, const at::Tensor& packed, at::Tensor out) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(),
              "final_logits: x a contiguous CPU [T, hidden] tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "final_logits: float32 or bfloat16 x");
  const int64_t T_ = x.size(0), hidden = x.size(1);
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.dim() == 1 && rows.is_contiguous(),
              "final_logits: rows a contiguous [R] int64 tensor");
  const int64_t R = rows.size(0);
  TORCH_CHECK(R >= 1 && R <= 16, "final_logits: 1..16 rows, got ", R);
  TORCH_CHECK(lm_head.dim() == 2 && lm_head.size(1) == hidden &&
                  lm_head.scalar_type() == x.scalar_type() && lm_head.is_contiguous(),
              "final_logits: lm_head a contiguous [V, hidden] tensor of x's dtype");
  const int64_t V = lm_head.size(0);
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.dim() == 2 && out.size(0) == R &&
                  out.size(1) == V && out.is_contiguous(),
              "final_logits: out a contiguous float32 [R, V] tensor");
  at::Tensor picked = at::empty({R, hidden}, x.options());
  const int64_t* r = rows.data_ptr<int64_t>();
  const int64_t row_bytes = hidden * x.element_size();
  for (int64_t i = 0; i < R; ++i) {
    TORCH_CHECK(r[i] >= 0 && r[i] < T_, "final_logits: row ", r[i], " outside [0, ", T_, ")");
    std::memcpy(static_cast<char*>(picked.data_ptr()) + i * row_bytes,
                static_cast<const char*>(x.data_ptr()) + r[i] * row_bytes, row_bytes);
  }
  const at::Tensor h = sagellm::rms_norm(picked, norm_w, eps);
  // h . lm_head^T into y (x's dtype)
  const auto product = [&](at::Tensor& y) {
    if (!packed.numel()) return sagellm::gemv(h, lm_head, y);
#ifdef SAGELLM_GEMM_PACKED
    sagellm::gemm_packed(h, packed, at::empty({0}, x.options()), y);
#else
    TORCH_CHECK(false, "final_logits: a packed lm_head needs AVX-512F or AVX2 with FMA");
#endif
  };
  if (x.scalar_type() == at::kFloat) {
    product(out);
    return;
  }
  at::Tensor y = at::empty({R, V}, x.options());
  product(y);
  const at::BFloat16* yp = y.data_ptr<at::BFloat16>();
  float* op = out.data_ptr<float>();
#pragma omp simd
  for (int64_t k = 0; k < R * V; ++k) op[k] = static_cast<float>(yp[k]);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sagellm, m) {
  m.def(
      "final_logits(Tensor x, Tensor rows, Tensor norm_w, float eps, Tensor lm_head, "
      "Tensor packed, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(sagellm, CPU, m) { m.impl("final_logits", &final_logits); }
