// The AVX-512 tile of gemm_packed.cpp: one 64-byte weight vector per 16 output columns, the
// operand of an FMA (fp32) or of vdpbf16ps (bf16, where the compiler targets AVX512-BF16).
//
// A tile of 8 rows x up to 3 * 16 columns keeps its 24 fp32 accumulators in registers over all
// of K: per group of inputs, 3 weight vectors (from L1/L2; a panel is 16 columns x K) and one
// broadcast of x per row (a bf16 pair, as one 32-bit lane). bf16's vdpbf16ps multiplies pairs
// exactly and adds in fp32 with denormals flushed, as oneDNN's bf16 GEMM on these CPUs does.
#pragma once

#include <ATen/ATen.h>
#include <immintrin.h>

#include <cstdint>
#include <type_traits>
#include <vector>

namespace sagellm_gemm {

constexpr int kRows = 8, kPanels = 3;
constexpr const char* kIsa = "AVX-512F";
// linear.py gives single rows to the GEMV (gemv.cpp), this GEMM from 2 rows on
// (gemm_packed_min_rows; measured in linear.py)
constexpr int64_t kMinRows = 2;

template <typename T>
constexpr bool kServes = std::is_same_v<T, float>
#if defined(__AVX512BF16__)
                         || std::is_same_v<T, at::BFloat16>
#endif
    ;

template <typename T>
using XOf = T;  // the tile reads x in its own dtype

template <typename T>
const T* stage_x(const T* x, int64_t, int64_t, std::vector<float>&) {
  return x;
}

// Both dtypes' vectors travel as __m512: a weight vector (16 fp32 weights, or 16 lanes of bf16
// pairs), x's group g broadcast to every lane, and acc += a * w lane by lane (pairs summed)
template <typename T>
inline __m512 load_w(const T* w) {
  if constexpr (std::is_same_v<T, float>) return _mm512_loadu_ps(w);
  return _mm512_castsi512_ps(_mm512_loadu_si512(w));
}

template <typename T>
inline __m512 broadcast(const T* xrow, int64_t g) {
  if constexpr (std::is_same_v<T, float>) return _mm512_set1_ps(xrow[g]);
  return _mm512_castsi512_ps(_mm512_set1_epi32(reinterpret_cast<const int32_t*>(xrow)[g]));
}

template <typename T>
inline __m512 madd(__m512 acc, __m512 a, __m512 w) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm512_fmadd_ps(a, w, acc);
  } else {
#if defined(__AVX512BF16__)
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_castps_si512(a),
                            (__m512bh)_mm512_castps_si512(w));
#else
    return acc;  // never instantiated: bf16 is served only with AVX512-BF16 (kServes)
#endif
  }
}

template <typename T>
inline void store(T* out, __m512 v) {
  if constexpr (std::is_same_v<T, float>) {
    _mm512_storeu_ps(out, v);
  } else {
#if defined(__AVX512BF16__)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)_mm512_cvtneps_pbh(v));
#endif
  }
}

// out[r, j * 16 + c] for r < R, j < NP: x's R rows (row stride K) times the NP column panels
// starting at wp (panel stride Kg weight vectors)
template <typename T, int R, int NP>
inline void tile(const T* x, int64_t K, const T* wp, int64_t Kg, const float* bias, T* out,
                 int64_t N) {
  constexpr int64_t V = 64 / sizeof(T);  // elements per 64-byte weight vector
  __m512 acc[R][NP];
  for (int j = 0; j < NP; ++j) {
    const __m512 b = bias ? _mm512_loadu_ps(bias + j * 16) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) acc[r][j] = b;
  }
  for (int64_t g = 0; g < Kg; ++g) {
    __m512 w[NP];
    for (int j = 0; j < NP; ++j) w[j] = load_w<T>(wp + (j * Kg + g) * V);
    for (int r = 0; r < R; ++r) {
      const __m512 a = broadcast<T>(x + r * K, g);
      for (int j = 0; j < NP; ++j) acc[r][j] = madd<T>(acc[r][j], a, w[j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NP; ++j) store<T>(out + r * N + j * 16, acc[r][j]);
}

}  // namespace sagellm_gemm
