// The C++ kernels other kernels call directly (each is also a torch.ops.sagellm op; see the
// .cpp files for shapes, dtypes and numerics).
#pragma once

#include <ATen/ATen.h>

namespace sagellm {

// out[T, H, D] = causal attention of q[T, H, D] over one layer's paged K/V (paged_attention.cpp)
void paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                     const at::Tensor& block_ids, const at::Tensor& q_starts,
                     const at::Tensor& q_lens, const at::Tensor& num_computed,
                     int64_t max_blocks, double scale, at::Tensor out);

// out[M, O] = x[M <= 16, I] . w[O, I]^T, fp32 or bf16 (gemv.cpp)
void gemv(const at::Tensor& x, const at::Tensor& w, at::Tensor& out);

// out[M, O] = (x[M <= 16, I] . w_int8[O, I]^T) * scale[O] (gemv.cpp)
void gemv_int8(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, at::Tensor& out);

// RMSNorm of each row of x [M, N] (fp32 or bf16) with weight w [N], as the layers apply it
// (decoder_layers.cpp)
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);

// out[M, N] = x[M, K] . w^T (+ bias) over pack_gemm's wp [N / 16, K / P, 16 P] (gemm_packed.cpp;
// compiled where SAGELLM_GEMM_PACKED is defined: the compiler targets AVX-512F (bf16 with
// AVX512-BF16 only) or AVX2 with FMA)
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define SAGELLM_GEMM_PACKED 1
#endif
void gemm_packed(const at::Tensor& x, const at::Tensor& wp, const at::Tensor& bias,
                 at::Tensor& out);

}  // namespace sagellm
