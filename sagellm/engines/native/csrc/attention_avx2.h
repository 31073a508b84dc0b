// The AVX2 inner loop of paged_attention.cpp (CPUs without AVX-512), for head sizes
// D = 8 * DV (DV = 2, 4, 8, 16: D = 16, 32, 64, 128).
//
// A one-pass online softmax over tiles of up to 32 keys of one block: each 8-key chunk's G x 8
// scores are one vector per query head, exponentiated 8 at a time, and the running max,
// denominator and P.V accumulator are updated once per tile (the accumulator rescaled when the
// max grows). All arithmetic is fp32; bf16 K/V rows are widened once per chunk. W1-shaped decode
// attention (64 sequences x 320 keys x 30 layers, Zen 3, 2 threads) took 54-56 ms a step
// against 61-64 with one softmax step per 8-key chunk (fp32; bf16 36 against 39-41). Same
// inputs and result as the portable two-pass loop, to fp32 rounding (the sums run in another
// order; e^x is a polynomial, not libm's).
#pragma once

#include <ATen/ATen.h>
#include <immintrin.h>

#include "vec_avx2.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

namespace sagellm_avx2 {

inline float hmax8(__m256 v) {
  __m128 r = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_max_ps(r, _mm_movehl_ps(r, r));
  return _mm_cvtss_f32(_mm_max_ss(r, _mm_movehdup_ps(r)));
}

// lane s of the result = the sum of a[s]'s 8 lanes (three rounds of hadd and one cross-lane
// add for 8 dot products instead of 8 horizontal reductions)
inline __m256 hsum8(const __m256* a) {
  const __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                       _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// Query heads per kv head this loop serves (the portable loop takes larger groups).
constexpr int64_t kMaxGroup = 16;

// Keys per online-softmax step: up to 4 chunks of 8 (a 32-token block in one step), so the
// running max, the denominator and the rescale of the P.V accumulator are paid once per 32 keys
// rather than once per 8.
constexpr int64_t kTileChunks = 4;
constexpr int64_t kTileKeys = 8 * kTileChunks;

// One online-softmax step for one query head over a tile of n <= kTileKeys keys: their scores
// sc[0..n) (past n ignored) raise the running max m if larger and rescale the running
// denominator l; sc[0..n) are replaced by the probabilities exp(sc - m) (past n: 0, up to the
// chunk's end). Returns the factor exp(m_old - m_new) the caller's P.V accumulator must be
// scaled by (0 on the first tile; exactly 1, without a scalar exp, when the max did not grow).
// A NaN score makes l NaN for good (so the row's output is NaN, as in the reference): max and
// exp8's clamp would otherwise turn it into an ordinary small weight.
inline float softmax_tile(float* sc, int64_t n, float& m, float& l) {
  const int64_t chunks = (n + 7) / 8;
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 sv[kTileChunks], live[kTileChunks];
  __m256 mx = neg_inf, nan = _mm256_setzero_ps();
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t c = std::min<int64_t>(8, n - ch * 8);
    live[ch] =
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(c)), lane));
    sv[ch] = _mm256_blendv_ps(neg_inf, _mm256_loadu_ps(sc + ch * 8), live[ch]);
    mx = _mm256_max_ps(mx, sv[ch]);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(sv[ch], sv[ch], _CMP_UNORD_Q));
  }
  const float tile_max = hmax8(mx);
  float corr = 1.f;
  if (tile_max > m) {
    corr = std::exp(m - tile_max);
    m = tile_max;
  }
  const __m256 mv = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t ch = 0; ch < chunks; ++ch) {
    // exp8 clamps the dead lanes' -inf to e^-87: they are masked to 0
    const __m256 p = _mm256_and_ps(live[ch], exp8(_mm256_sub_ps(sv[ch], mv)));
    _mm256_storeu_ps(sc + ch * 8, p);
    sum = _mm256_add_ps(sum, p);
  }
  l = l * corr + hadd8(sum);
  if (_mm256_movemask_ps(nan)) l = std::numeric_limits<float>::quiet_NaN();
  return corr;
}

// One query row: out[g] = softmax(q[g] . K^T * scale) . V for the G <= kMaxGroup query heads of
// one kv head, over the first num_keys keys of a block table. q_scaled: [G, D] fp32 (already
// times scale); acc: [G, D] scratch; block_rows(i, &k, &v): the first K and V rows of this kv
// head in the table's i-th block. Per tile of up to kTileKeys keys of one block: every head's
// scores (8 keys per hsum8), then per head one softmax step and the tile's P.V in DV register
// accumulators (loaded and stored once per tile).
template <int DV, typename T, typename RowOf>
void attend_row(const float* q_scaled, int64_t G, int64_t num_keys, int64_t bs, RowOf block_rows,
                float* acc, T* out) {
  constexpr int64_t D = 8 * DV;
  float m[kMaxGroup], l[kMaxGroup], sc[kMaxGroup * kTileKeys];
  float kf[kTileKeys * D], vf[kTileKeys * D];  // chunks as fp32 when not read in place
  for (int64_t g = 0; g < G; ++g) {
    m[g] = -std::numeric_limits<float>::infinity();
    l[g] = 0.f;
  }
  std::fill(acc, acc + G * D, 0.f);
  for (int64_t t0 = 0, blk_i = 0; t0 < num_keys; t0 += bs, ++blk_i) {
    const T* krows;
    const T* vrows;
    block_rows(blk_i, &krows, &vrows);
    const int64_t n_blk = std::min(bs, num_keys - t0);
    for (int64_t s0 = 0; s0 < n_blk; s0 += kTileKeys) {
      const int64_t n = std::min(kTileKeys, n_blk - s0);
      const int64_t chunks = (n + 7) / 8;
      // fp32 rows of a full chunk are read in place; bf16 rows, and the rows of a chunk that
      // ends inside the block (the rest zero, never read past the block), go through kf/vf
      const float* kc[kTileChunks];
      const float* vc[kTileChunks];
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t first = s0 + ch * 8, c = std::min<int64_t>(8, n - ch * 8);
        if constexpr (std::is_same_v<T, float>) {
          if (c == 8) {
            kc[ch] = krows + first * D;
            vc[ch] = vrows + first * D;
            continue;
          }
        }
        float* kd = kf + ch * 8 * D;
        float* vd = vf + ch * 8 * D;
        for (int64_t i = 0; i < 8 * DV; ++i) {
          const bool in = i < c * DV;
          _mm256_storeu_ps(kd + i * 8, in ? load8(krows + first * D + i * 8) : _mm256_setzero_ps());
          _mm256_storeu_ps(vd + i * 8, in ? load8(vrows + first * D + i * 8) : _mm256_setzero_ps());
        }
        kc[ch] = kd;
        vc[ch] = vd;
      }
      for (int64_t g = 0; g < G; ++g) {
        const float* q = q_scaled + g * D;
        for (int64_t ch = 0; ch < chunks; ++ch) {
          __m256 a[8];
          for (int s = 0; s < 8; ++s) a[s] = _mm256_mul_ps(load8(q), load8(kc[ch] + s * D));
          for (int dv = 1; dv < DV; ++dv)
            for (int s = 0; s < 8; ++s)
              a[s] = _mm256_fmadd_ps(load8(q + dv * 8), load8(kc[ch] + s * D + dv * 8), a[s]);
          _mm256_storeu_ps(sc + g * kTileKeys + ch * 8, hsum8(a));
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        float* p = sc + g * kTileKeys;
        const float corr = softmax_tile(p, n, m[g], l[g]);
        float* a = acc + g * D;
        const __m256 cv = _mm256_set1_ps(corr);
        __m256 o[DV];
        for (int dv = 0; dv < DV; ++dv) o[dv] = _mm256_mul_ps(load8(a + dv * 8), cv);
        for (int64_t s = 0; s < n; ++s) {
          const __m256 ps = _mm256_set1_ps(p[s]);
          const float* v = vc[s / 8] + (s % 8) * D;
          for (int dv = 0; dv < DV; ++dv) o[dv] = _mm256_fmadd_ps(ps, load8(v + dv * 8), o[dv]);
        }
        for (int dv = 0; dv < DV; ++dv) _mm256_storeu_ps(a + dv * 8, o[dv]);
      }
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    const float inv = 1.f / l[g];
    for (int64_t j = 0; j < D; ++j) out[g * D + j] = static_cast<T>(acc[g * D + j] * inv);
  }
}

}  // namespace sagellm_avx2
