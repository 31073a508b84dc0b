// The AVX2 tile of gemm_packed.cpp (CPUs with AVX2 and FMA, without AVX-512F): the same packed
// layout, 16 output columns per weight vector, held as two 8-lane halves.
//
// A tile of 6 rows x 16 columns keeps its 12 fp32 accumulators in registers over all of K (the
// 6 x 16 shape of the classic AVX2 GEMM kernels: 12 accumulators, 2 weight vectors and one
// broadcast fill 15 of the 16 registers). fp32: per input, 2 weight vectors and one broadcast
// of x per row. bf16 has no dot-product instruction here: per pair of inputs, each 32-bit lane
// of the weight vector holds an even input's weight (low half: shifted up, it is that weight
// in fp32) and an odd one's (high half: the low bits masked off), and x, widened to fp32 once
// per row block (stage_x), is broadcast per input. Products of bf16 weights and bf16-exact x
// are exact in fp32, so bf16 sums are fp32 sums of exact products, rounded once to bf16
// (nearest even, as torch rounds).
//
// One row (batch-1 decode) has its own tile, tile_row: the 6-row tile's single-row case keeps
// one chain of K dependent FMAs per 8 columns, which left it (and the row-major GEMV) at about
// the rate DRAM streams the weight even with the weight in L2, so the two never overlapped.
#pragma once

#include <ATen/ATen.h>
#include <immintrin.h>

#include "vec_avx2.h"

#include <cstdint>
#include <type_traits>
#include <vector>

namespace sagellm_gemm {

constexpr int kRows = 6, kPanels = 1;
constexpr const char* kIsa = "AVX2";
// gemm_packed.cpp gives a single row to tile_row, and linear.py gives this GEMM single rows
// (gemm_packed_min_rows) where the GEMV's per-row dot product kept two dependent FMA chains
#define SAGELLM_GEMM_ONE_ROW 1
constexpr int64_t kMinRows = 1;

template <typename T>
constexpr bool kServes = std::is_same_v<T, float> || std::is_same_v<T, at::BFloat16>;

template <typename T>
using XOf = float;  // the tile reads x in fp32: bf16 rows are widened by stage_x

// x's mb rows [mb, K] as the tile reads them: fp32 as is; bf16 widened into buf
template <typename T>
const float* stage_x(const T* x, int64_t mb, int64_t K, std::vector<float>& buf) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    buf.resize(mb * K);
    for (int64_t i = 0; i < mb * K; ++i) buf[i] = static_cast<float>(x[i]);
    return buf.data();
  }
}

template <typename T>
inline void store16(T* out, __m256 lo, __m256 hi) {
  sagellm_avx2::store8(out, lo);
  sagellm_avx2::store8(out + 8, hi);
}

// out[r, c] for r < R, c < 16: x's R fp32 rows (row stride K inputs) times the column panel at
// wp ([Kg, 16 P]); NP is 1 (kPanels)
template <typename T, int R, int NP>
inline void tile(const float* x, int64_t K, const T* wp, int64_t Kg, const float* bias, T* out,
                 int64_t N) {
  static_assert(NP == 1, "the AVX2 tile is one panel wide");
  __m256 lo[R], hi[R];  // columns 0-7 and 8-15 of each row
  const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
    lo[r] = b0;
    hi[r] = b1;
  }
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t g = 0; g < Kg; ++g) {
      const __m256 w0 = _mm256_loadu_ps(wp + g * 16), w1 = _mm256_loadu_ps(wp + g * 16 + 8);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
        const __m256 a = _mm256_broadcast_ss(x + r * K + g);
        lo[r] = _mm256_fmadd_ps(a, w0, lo[r]);
        hi[r] = _mm256_fmadd_ps(a, w1, hi[r]);
      }
    }
  } else {
    const __m256i odd = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    for (int64_t g = 0; g < Kg; ++g) {
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + g * 32));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + g * 32 + 16));
      __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
      __m256 w1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
        const __m256 a = _mm256_broadcast_ss(x + r * K + 2 * g);
        lo[r] = _mm256_fmadd_ps(a, w0, lo[r]);
        hi[r] = _mm256_fmadd_ps(a, w1, hi[r]);
      }
      w0 = _mm256_castsi256_ps(_mm256_and_si256(v0, odd));
      w1 = _mm256_castsi256_ps(_mm256_and_si256(v1, odd));
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
        const __m256 a = _mm256_broadcast_ss(x + r * K + 2 * g + 1);
        lo[r] = _mm256_fmadd_ps(a, w0, lo[r]);
        hi[r] = _mm256_fmadd_ps(a, w1, hi[r]);
      }
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) store16<T>(out + r * N, lo[r], hi[r]);
}

// out[0, c] for c < 16: one fp32 row x times the panel at wp ([Kg, 16 P]). The groups of inputs
// go round-robin to kSplit pairs of accumulators (fp32: group g to pair g % 4; bf16: group g's
// even input to pair 2 (g % 2), its odd input to the pair after it): 8 independent chains of
// K / 4 FMAs each, summed pairwise at the end, the bias added last, then rounded once to T.
// Measured on 2 Zen 3 cores, [1536, 576] held in the caches, GB/s of weight: bf16 54 vs the
// GEMV's 32, fp32 101 vs 59.
constexpr int kSplit = 4;

// bf16 rows ask for the weight line kAheadLines ahead with the non-temporal hint (prefetchnta;
// past the panel it is the next panel, which a thread running its own range from the front
// runs next (a thread stealing from the back of another's range, steal_split.h, has run it
// already: 16 wasted lines a stolen panel); past the weight a request that cannot fault).
// On the Zen 3 VM a chain of SmolLM2's 120 layer matrices at one row streamed 24-27.5 GB/s
// with it against 19.5-22.4 without (8-16 lines ahead alike, 4 less, 32 less; prefetcht0 in
// between); W3 bf16 decode, medians of 5 runs in alternating processes, 82.7 / 89.2 / 94.9
// tok/s against 78.3 / 84.6 / 84.5. fp32 rows gained nothing (level at 8-16 lines, slower at
// 32): they go without.
constexpr int64_t kAheadLines = 16;

template <typename T>
inline void tile_row(const float* x, const T* wp, int64_t Kg, const float* bias, T* out) {
  __m256 lo[kSplit], hi[kSplit];
  _Pragma("GCC unroll 8") for (int s = 0; s < kSplit; ++s) lo[s] = hi[s] = _mm256_setzero_ps();
  int64_t g = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; g + kSplit <= Kg; g += kSplit) {
      _Pragma("GCC unroll 8") for (int s = 0; s < kSplit; ++s) {
        const __m256 a = _mm256_broadcast_ss(x + g + s);
        lo[s] = _mm256_fmadd_ps(a, _mm256_loadu_ps(wp + (g + s) * 16), lo[s]);
        hi[s] = _mm256_fmadd_ps(a, _mm256_loadu_ps(wp + (g + s) * 16 + 8), hi[s]);
      }
    }
    for (; g < Kg; ++g) {
      const __m256 a = _mm256_broadcast_ss(x + g);
      lo[0] = _mm256_fmadd_ps(a, _mm256_loadu_ps(wp + g * 16), lo[0]);
      hi[0] = _mm256_fmadd_ps(a, _mm256_loadu_ps(wp + g * 16 + 8), hi[0]);
    }
  } else {
    const __m256i odd = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    // group g's even input into pair s, its odd input into pair s + 1
    const auto group = [&](int64_t g, int s) {
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + g * 32));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + g * 32 + 16));
      const __m256 ae = _mm256_broadcast_ss(x + 2 * g), ao = _mm256_broadcast_ss(x + 2 * g + 1);
      lo[s] = _mm256_fmadd_ps(ae, _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), lo[s]);
      hi[s] = _mm256_fmadd_ps(ae, _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), hi[s]);
      lo[s + 1] = _mm256_fmadd_ps(ao, _mm256_castsi256_ps(_mm256_and_si256(v0, odd)), lo[s + 1]);
      hi[s + 1] = _mm256_fmadd_ps(ao, _mm256_castsi256_ps(_mm256_and_si256(v1, odd)), hi[s + 1]);
    };
    const char* line = reinterpret_cast<const char*>(wp);  // group g is line g (64 bytes)
    for (; g + 2 <= Kg; g += 2) {
      _mm_prefetch(line + (g + kAheadLines) * 64, _MM_HINT_NTA);
      _mm_prefetch(line + (g + kAheadLines + 1) * 64, _MM_HINT_NTA);
      group(g, 0);
      group(g + 1, 2);
    }
    if (g < Kg) group(g, 0);
  }
  __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[1]), _mm256_add_ps(lo[2], lo[3]));
  __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[1]), _mm256_add_ps(hi[2], hi[3]));
  if (bias) {
    l = _mm256_add_ps(l, _mm256_loadu_ps(bias));
    h = _mm256_add_ps(h, _mm256_loadu_ps(bias + 8));
  }
  store16<T>(out, l, h);
}

}  // namespace sagellm_gemm
