// Skinny linear layers on CPU: out[M, O] = x[M, I] . w[O, I]^T for a few rows M (batch-1 and
// small-batch decode), where torch's GEMM path is far from memory bandwidth (bf16 at M = 1
// reaches about a third of the fp32 path's bytes per second on AVX-512 CPUs).
//
// Registered as torch.ops.sagellm.gemv(x, w, out). x, w, out contiguous and of one dtype,
// float32 or bfloat16. Each weight row is read once from memory for all M rows of x (x stays in
// L1); output rows are split across torch's intra-op threads. Products are summed in fp32 and
// each output is rounded once to the dtype, as torch's CPU GEMM does; the summation order
// differs from it, so results agree to fp32 rounding, not bitwise. bf16 uses AVX512-BF16 dot
// products (vdpbf16ps) when the compiler targets them, AVX2 FMAs on bf16 widened in registers
// (a shift or a mask per 8 lanes) on AVX2-only CPUs, else a converted fp32 loop. With 2 or more
// rows on AVX2 (no AVX512-BF16), x is widened once and each weight row once per 4 rows of x
// (run_bf16_rows).
//
// torch.ops.sagellm.gemv_int8(x, w, scale, out): the same for a weight-only int8 matrix
// w [O, I] with one scale per output row (out[m, o] = scale[o] * sum_i x[m, i] * w[o, i]); x,
// scale and out share a dtype (float32 or bfloat16). Rows of x are widened to fp32 once; each
// int8 row is read once (1 byte per weight) and widened in registers.
#include "ops.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kMaxRows = 16;

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum256(__m256 v) {  // the sum of v's 8 lanes
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}
#endif

inline float dot_f32(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}

inline float dot_bf16(const at::BFloat16* a, const at::BFloat16* b, int64_t n) {
  int64_t j = 0;
  float s = 0.f;
#if defined(__AVX512BF16__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; j + 64 <= n; j += 64) {
    __m512i a0 = _mm512_loadu_si512(a + j), b0 = _mm512_loadu_si512(b + j);
    __m512i a1 = _mm512_loadu_si512(a + j + 32), b1 = _mm512_loadu_si512(b + j + 32);
    acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)a0, (__m512bh)b0);
    acc1 = _mm512_dpbf16_ps(acc1, (__m512bh)a1, (__m512bh)b1);
  }
  for (; j + 32 <= n; j += 32) {
    __m512i a0 = _mm512_loadu_si512(a + j), b0 = _mm512_loadu_si512(b + j);
    acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)a0, (__m512bh)b0);
  }
  s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#elif defined(__AVX2__) && defined(__FMA__)
  // 16 bf16 per 256-bit load; a 32-bit lane holds an even element (low half, shifted up to
  // become its fp32) and an odd one (high half, low bits masked off)
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    const __m256i a16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j));
    const __m256i b16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j));
    acc0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(a16, 16)),
                           _mm256_castsi256_ps(_mm256_slli_epi32(b16, 16)), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(a16, hi)),
                           _mm256_castsi256_ps(_mm256_and_si256(b16, hi)), acc1);
  }
  s = hsum256(_mm256_add_ps(acc0, acc1));
#endif
  float t = 0.f;
#pragma omp simd reduction(+ : t)
  for (int64_t k = j; k < n; ++k) t += static_cast<float>(a[k]) * static_cast<float>(b[k]);
  return s + t;
}

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512BF16__)
#define SAGELLM_GEMV_BF16_ROWS 1
// bf16 with 2 or more rows of x on AVX2: x is widened to fp32 once, each full 16-chunk stored
// as its 8 even then its 8 odd elements (the two halves a 256-bit load of 16 bf16 weights
// splits into; the tail stays in order). Each weight row is then widened once per 4 rows of x
// and meets them in 8 independent accumulators, where a dot per (row of x, weight row)
// widened both operands every time and left the FMA units waiting on one chain each.
std::vector<float> widen_x_pairs(const at::BFloat16* x, int64_t M, int64_t I) {
  std::vector<float> xf(M * I);
  const int64_t full = I / 16 * 16;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t j = 0; j < I; ++j) {
      const int64_t k = j < full ? j / 16 * 16 + (j % 2) * 8 + (j % 16) / 2 : j;
      xf[m * I + k] = static_cast<float>(x[m * I + j]);
    }
  }
  return xf;
}

// s[r] = x_r . w for R consecutive rows of xf (widen_x_pairs layout, row stride I)
template <int R>
inline void dot_x_rows(const float* xf, int64_t I, const at::BFloat16* w, float* s) {
  const __m256i odd = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m256 lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= I; j += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j));
    const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, odd));
    for (int r = 0; r < R; ++r) {
      lo[r] = _mm256_fmadd_ps(we, _mm256_loadu_ps(xf + r * I + j), lo[r]);
      hi[r] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(xf + r * I + j + 8), hi[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float t = hsum256(_mm256_add_ps(lo[r], hi[r]));
    for (int64_t k = j; k < I; ++k) t += xf[r * I + k] * static_cast<float>(w[k]);
    s[r] = t;
  }
}

void run_bf16_rows(const at::BFloat16* x, const at::BFloat16* w, at::BFloat16* out, int64_t M,
                   int64_t O, int64_t I) {
  const std::vector<float> xf = widen_x_pairs(x, M, I);
  at::parallel_for(0, O, 64, [&](int64_t begin, int64_t end) {
    float s[4];
    for (int64_t o = begin; o < end; ++o) {
      const at::BFloat16* row = w + o * I;
      for (int64_t m = 0; m < M; m += 4) {
        const float* xr = xf.data() + m * I;
        const int64_t r = std::min<int64_t>(4, M - m);
        if (r == 4) {
          dot_x_rows<4>(xr, I, row, s);
        } else if (r == 3) {
          dot_x_rows<3>(xr, I, row, s);
        } else if (r == 2) {
          dot_x_rows<2>(xr, I, row, s);
        } else {
          dot_x_rows<1>(xr, I, row, s);
        }
        for (int64_t k = 0; k < r; ++k) out[(m + k) * O + o] = static_cast<at::BFloat16>(s[k]);
      }
    }
  });
}
#endif

template <typename T>
void run(const T* x, const T* w, T* out, int64_t M, int64_t O, int64_t I) {
#ifdef SAGELLM_GEMV_BF16_ROWS
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    if (M >= 2) return run_bf16_rows(x, w, out, M, O, I);
  }
#endif
  at::parallel_for(0, O, 64, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const T* row = w + o * I;
      if (o + 4 < end) __builtin_prefetch(w + (o + 4) * I);
      for (int64_t m = 0; m < M; ++m) {
        float s;
        if constexpr (std::is_same_v<T, float>) {
          s = dot_f32(x + m * I, row, I);
        } else {
          s = dot_bf16(x + m * I, row, I);
        }
        out[m * O + o] = static_cast<T>(s);
      }
    }
  });
}

inline float dot_i8(const float* x, const int8_t* w, int64_t n) {
  int64_t j = 0;
  float s = 0.f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; j + 32 <= n; j += 32) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + j));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + j + 16));
    acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(a)), _mm512_loadu_ps(x + j), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)),
                           _mm512_loadu_ps(x + j + 16), acc1);
  }
  s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + j));
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(a)), _mm256_loadu_ps(x + j), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(a, 8))),
                           _mm256_loadu_ps(x + j + 8), acc1);
  }
  s = hsum256(_mm256_add_ps(acc0, acc1));
#endif
  for (; j < n; ++j) s += x[j] * static_cast<float>(w[j]);
  return s;
}

template <typename T>
void run_int8(const T* x, const int8_t* w, const T* scale, T* out, int64_t M, int64_t O,
              int64_t I) {
  std::vector<float> xf(M * I);
  for (int64_t k = 0; k < M * I; ++k) xf[k] = static_cast<float>(x[k]);
  at::parallel_for(0, O, 64, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int8_t* row = w + o * I;
      if (o + 8 < end) __builtin_prefetch(w + (o + 8) * I);
      const float sc = static_cast<float>(scale[o]);
      for (int64_t m = 0; m < M; ++m) out[m * O + o] = static_cast<T>(sc * dot_i8(&xf[m * I], row, I));
    }
  });
}

}  // namespace

namespace sagellm {

void gemv_int8(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, at::Tensor& out) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && out.dim() == 2 && scale.dim() == 1,
              "gemv_int8: x, w, out 2-D and scale 1-D");
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && out.is_contiguous() && scale.is_contiguous(),
              "gemv_int8: contiguous tensors");
  const int64_t M = x.size(0), I = x.size(1), O = w.size(0);
  TORCH_CHECK(M >= 1 && M <= kMaxRows, "gemv_int8: 1..16 rows of x, got ", M);
  TORCH_CHECK(w.size(1) == I && out.size(0) == M && out.size(1) == O && scale.size(0) == O,
              "gemv_int8: shapes");
  TORCH_CHECK(w.scalar_type() == at::kChar, "gemv_int8: int8 weights");
  TORCH_CHECK(x.scalar_type() == out.scalar_type() && scale.scalar_type() == out.scalar_type(),
              "gemv_int8: x, scale and out share one dtype");
  if (x.scalar_type() == at::kFloat) {
    run_int8<float>(x.data_ptr<float>(), w.data_ptr<int8_t>(), scale.data_ptr<float>(),
                    out.data_ptr<float>(), M, O, I);
  } else if (x.scalar_type() == at::kBFloat16) {
    run_int8<at::BFloat16>(x.data_ptr<at::BFloat16>(), w.data_ptr<int8_t>(),
                           scale.data_ptr<at::BFloat16>(), out.data_ptr<at::BFloat16>(), M, O, I);
  } else {
    TORCH_CHECK(false, "gemv_int8: float32 or bfloat16 activations only");
  }
}

void gemv(const at::Tensor& x, const at::Tensor& w, at::Tensor& out) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && out.dim() == 2, "gemv: 2-D tensors");
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && out.is_contiguous(),
              "gemv: contiguous tensors");
  const int64_t M = x.size(0), I = x.size(1), O = w.size(0);
  TORCH_CHECK(M >= 1 && M <= kMaxRows, "gemv: 1..16 rows of x, got ", M);
  TORCH_CHECK(w.size(1) == I && out.size(0) == M && out.size(1) == O, "gemv: shapes");
  TORCH_CHECK(x.scalar_type() == w.scalar_type() && out.scalar_type() == w.scalar_type(),
              "gemv: one dtype");
  if (w.scalar_type() == at::kFloat) {
    run<float>(x.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<float>(), M, O, I);
  } else if (w.scalar_type() == at::kBFloat16) {
    run<at::BFloat16>(x.data_ptr<at::BFloat16>(), w.data_ptr<at::BFloat16>(),
                      out.data_ptr<at::BFloat16>(), M, O, I);
  } else {
    TORCH_CHECK(false, "gemv: float32 or bfloat16 only");
  }
}

}  // namespace sagellm

TORCH_LIBRARY_FRAGMENT(sagellm, m) {
  m.def("gemv(Tensor x, Tensor w, Tensor(a!) out) -> ()");
  m.def("gemv_int8(Tensor x, Tensor w, Tensor scale, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(sagellm, CPU, m) {
  m.impl("gemv", &sagellm::gemv);
  m.impl("gemv_int8", &sagellm::gemv_int8);
}
