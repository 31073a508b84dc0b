// The AVX-512 inner loop of paged_attention.cpp, for head sizes D = 16 * DV (DV = 1, 2, 4, 8).
//
// One pass over a (sequence, kv head)'s keys with an online softmax (flash-decoding): keys go
// in chunks of up to 16 rows of one block; each chunk's G x 16 scores are one vector per query
// head, exponentiated 16 at a time, and the running max, denominator and P.V accumulator are
// rescaled when the max grows. All arithmetic is fp32; K/V rows are read once per chunk (bf16
// rows are widened in registers). Same inputs and result as the portable two-pass loop, to fp32
// rounding (the sums run in another order).
#pragma once

#include "vec_avx512.h"

#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <limits>

namespace sagellm_avx512 {


// lane s of the result = the sum of a[s]'s 16 lanes (a transpose-and-add tree: 45 shuffles and
// adds for 16 dot products instead of 16 horizontal reductions)
inline __m512 hsum16(const __m512* a) {
  __m512 b[8], c[4];
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 d0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 d1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Query heads per kv head this loop serves (the portable loop takes larger groups).
constexpr int64_t kMaxGroup = 16;

// One online-softmax step for one query head: the chunk's scores sc[0..15] (lanes outside
// `live` ignored) raise the running max m if larger, rescale the running denominator l, and
// give the chunk's probabilities p = exp(sc - m) (0 outside `live`). Returns the factor
// exp(m_old - m_new) the caller's P.V accumulator must be scaled by (0 on the first chunk;
// exactly 1, without a scalar exp, when the max did not grow: most chunks). A NaN score makes
// l NaN for good (so the row's output is NaN, as in the reference): max and exp16's clamp
// would otherwise turn it into an ordinary small weight.
inline float softmax_chunk(const float* sc, __mmask16 live, float& m, float& l, __m512& p) {
  const __m512 sv =
      _mm512_mask_loadu_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()), live, sc);
  const float chunk_max = _mm512_reduce_max_ps(sv);
  float corr = 1.f;
  if (chunk_max > m) {
    corr = std::exp(m - chunk_max);
    m = chunk_max;
  }
  p = _mm512_maskz_mov_ps(live, exp16(_mm512_sub_ps(sv, _mm512_set1_ps(m))));
  l = l * corr + _mm512_reduce_add_ps(p);
  if (_mm512_cmp_ps_mask(sv, sv, _CMP_UNORD_Q)) l = std::numeric_limits<float>::quiet_NaN();
  return corr;
}

// One query row: out[g] = softmax(q[g] . K^T * scale) . V for the G <= kMaxGroup query heads of
// one kv head, over the first num_keys keys of a block table. q_scaled: [G, D] fp32 (already
// times scale); acc: [G, D] scratch; block_rows(i, &k, &v): the first K and V rows of this kv
// head in the table's i-th block.
template <int DV, typename T, typename RowOf>
void attend_row(const float* q_scaled, int64_t G, int64_t num_keys, int64_t bs, RowOf block_rows,
                float* acc, T* out) {
  constexpr int64_t D = 16 * DV;
  float m[kMaxGroup], l[kMaxGroup], p[kMaxGroup * 16];
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
    for (int64_t s0 = 0; s0 < n_blk; s0 += 16) {
      const int64_t c = std::min<int64_t>(16, n_blk - s0);
      const __mmask16 live = static_cast<__mmask16>((1u << c) - 1u);
      // the chunk's K and V rows as fp32: the cache's own rows, or bf16 rows widened once here
      // (the G query heads then read them from L1 instead of widening them G times)
      const float* kc;
      const float* vc;
      float kf[16 * D], vf[16 * D];
      if constexpr (std::is_same_v<T, float>) {
        kc = krows + s0 * D;
        vc = vrows + s0 * D;
      } else {
        for (int64_t i = 0; i < c * DV; ++i) {
          _mm512_storeu_ps(kf + i * 16, load16(krows + s0 * D + i * 16));
          _mm512_storeu_ps(vf + i * 16, load16(vrows + s0 * D + i * 16));
        }
        kc = kf;
        vc = vf;
      }
      float sc[kMaxGroup * 16];
      for (int64_t g = 0; g < G; ++g) {
        __m512 qv[DV], a[16];
        for (int dv = 0; dv < DV; ++dv) qv[dv] = _mm512_loadu_ps(q_scaled + g * D + dv * 16);
        for (int64_t s = 0; s < 16; ++s) {
          if (s >= c) {
            a[s] = _mm512_setzero_ps();
            continue;
          }
          const float* k = kc + s * D;
          a[s] = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k));
          for (int dv = 1; dv < DV; ++dv)
            a[s] = _mm512_fmadd_ps(qv[dv], _mm512_loadu_ps(k + dv * 16), a[s]);
        }
        _mm512_storeu_ps(sc + g * 16, hsum16(a));
      }
      for (int64_t g = 0; g < G; ++g) {
        __m512 pv;
        const float corr = softmax_chunk(sc + g * 16, live, m[g], l[g], pv);
        _mm512_storeu_ps(p + g * 16, pv);
        if (corr != 1.f) {
          const __m512 cv = _mm512_set1_ps(corr);
          for (int dv = 0; dv < DV; ++dv) {
            float* a = acc + g * D + dv * 16;
            _mm512_storeu_ps(a, _mm512_mul_ps(_mm512_loadu_ps(a), cv));
          }
        }
      }
      // P.V: two accumulators per 16 columns (even and odd keys), so consecutive FMAs do not
      // wait on each other
      for (int64_t g = 0; g < G; ++g) {
        __m512 even[DV], odd[DV];
        for (int dv = 0; dv < DV; ++dv) {
          even[dv] = _mm512_loadu_ps(acc + g * D + dv * 16);
          odd[dv] = _mm512_setzero_ps();
        }
        int64_t s = 0;
        for (; s + 1 < c; s += 2) {
          const __m512 pe = _mm512_set1_ps(p[g * 16 + s]), po = _mm512_set1_ps(p[g * 16 + s + 1]);
          const float* ve = vc + s * D;
          for (int dv = 0; dv < DV; ++dv) {
            even[dv] = _mm512_fmadd_ps(pe, _mm512_loadu_ps(ve + dv * 16), even[dv]);
            odd[dv] = _mm512_fmadd_ps(po, _mm512_loadu_ps(ve + D + dv * 16), odd[dv]);
          }
        }
        if (s < c) {
          const __m512 pe = _mm512_set1_ps(p[g * 16 + s]);
          for (int dv = 0; dv < DV; ++dv)
            even[dv] = _mm512_fmadd_ps(pe, _mm512_loadu_ps(vc + s * D + dv * 16), even[dv]);
        }
        for (int dv = 0; dv < DV; ++dv)
          _mm512_storeu_ps(acc + g * D + dv * 16, _mm512_add_ps(even[dv], odd[dv]));
      }
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    const float inv = 1.f / l[g];
    for (int64_t j = 0; j < D; ++j) out[g * D + j] = static_cast<T>(acc[g * D + j] * inv);
  }
}


#if defined(__AVX512BF16__)
// attend_row for a bf16 cache with AVX512-BF16 dot products instead of widened fp32 rows
// (D = 32 * DW, DW = 1, 2, 4): scores q.k are vdpbf16ps over bf16 pairs of q (the bf16 query
// as given: exact products) and of the key row, summed 16 keys at a time by hsum16 and then
// times scale in fp32 (q * scale rounded to bf16 would shift every score by up to 2^-9 of its
// size: 6% error in a weight at a score of 30); for p.v, each pair of keys'
// value rows is interleaved (unpacklo/hi_epi16) once per chunk, and every query head adds
// p (rounded to bf16, as SDPA does for bf16 inputs) times the pair with one vdpbf16ps per 16
// head dims. The interleave permutes head dims within 128-bit lanes; the accumulator keeps
// that order and the output undoes it. Softmax, sums and accumulators are fp32.
template <int DW, typename RowOf>
void attend_row_bf16(const at::BFloat16* q, float scale, int64_t G, int64_t num_keys, int64_t bs,
                     RowOf block_rows, float* acc, at::BFloat16* out) {
  constexpr int64_t D = 32 * DW, NV = 2 * DW;  // NV: 16-lane accumulators per head
  float m[kMaxGroup], l[kMaxGroup], p[kMaxGroup * 16];
  __m512i qb[kMaxGroup][DW];
  for (int64_t g = 0; g < G; ++g) {
    m[g] = -std::numeric_limits<float>::infinity();
    l[g] = 0.f;
    for (int w = 0; w < DW; ++w) qb[g][w] = _mm512_loadu_si512(q + g * D + w * 32);
  }
  std::fill(acc, acc + G * D, 0.f);
  const __m512 vscale = _mm512_set1_ps(scale);
  alignas(64) __m512i vp[8][NV];
  alignas(64) uint32_t pb[kMaxGroup][8];
  for (int64_t t0 = 0, blk_i = 0; t0 < num_keys; t0 += bs, ++blk_i) {
    const at::BFloat16* krows;
    const at::BFloat16* vrows;
    block_rows(blk_i, &krows, &vrows);
    const int64_t n_blk = std::min(bs, num_keys - t0);
    for (int64_t s0 = 0; s0 < n_blk; s0 += 16) {
      const int64_t c = std::min<int64_t>(16, n_blk - s0);
      const __mmask16 live = static_cast<__mmask16>((1u << c) - 1u);
      const at::BFloat16* kc = krows + s0 * D;
      const at::BFloat16* vc = vrows + s0 * D;
      float sc[kMaxGroup * 16];
      for (int64_t g = 0; g < G; ++g) {
        __m512 a[16];
        for (int64_t s = 0; s < 16; ++s) {
          if (s >= c) {
            a[s] = _mm512_setzero_ps();
            continue;
          }
          __m512 x = _mm512_setzero_ps();
          for (int w = 0; w < DW; ++w)
            x = _mm512_dpbf16_ps(x, (__m512bh)_mm512_loadu_si512(kc + s * D + w * 32),
                                 (__m512bh)qb[g][w]);
          a[s] = x;
        }
        _mm512_storeu_ps(sc + g * 16, _mm512_mul_ps(hsum16(a), vscale));
      }
      // value rows of key pairs, interleaved: vp[j][2w] holds (v[2j][d], v[2j+1][d]) for the
      // low four head dims of each 128-bit lane of the w-th 32-dim slice, vp[j][2w+1] the high
      const __m512i zero = _mm512_setzero_si512();
      for (int64_t j = 0; j < (c + 1) / 2; ++j) {
        for (int w = 0; w < DW; ++w) {
          const __m512i v0 = _mm512_loadu_si512(vc + 2 * j * D + w * 32);
          const __m512i v1 = 2 * j + 1 < c ? _mm512_loadu_si512(vc + (2 * j + 1) * D + w * 32) : zero;
          vp[j][2 * w] = _mm512_unpacklo_epi16(v0, v1);
          vp[j][2 * w + 1] = _mm512_unpackhi_epi16(v0, v1);
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        __m512 pv;
        const float corr = softmax_chunk(sc + g * 16, live, m[g], l[g], pv);
        _mm256_store_si256(reinterpret_cast<__m256i*>(pb[g]), (__m256i)_mm512_cvtneps_pbh(pv));
        __m512 o[NV];
        for (int v = 0; v < NV; ++v) o[v] = _mm512_loadu_ps(acc + g * D + v * 16);
        if (corr != 1.f) {
          const __m512 cv = _mm512_set1_ps(corr);
          for (int v = 0; v < NV; ++v) o[v] = _mm512_mul_ps(o[v], cv);
        }
        for (int64_t j = 0; j < (c + 1) / 2; ++j) {
          const __m512bh pj = (__m512bh)_mm512_set1_epi32(pb[g][j]);
          for (int v = 0; v < NV; ++v) o[v] = _mm512_dpbf16_ps(o[v], (__m512bh)vp[j][v], pj);
        }
        for (int v = 0; v < NV; ++v) _mm512_storeu_ps(acc + g * D + v * 16, o[v]);
      }
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    const float inv = 1.f / l[g];
    for (int w = 0; w < DW; ++w) {
      for (int half = 0; half < 2; ++half) {  // accumulator 2w + half, lane 4L + t
        const float* a = acc + g * D + (2 * w + half) * 16;
        for (int lane = 0; lane < 16; ++lane) {
          const int64_t d = w * 32 + (lane / 4) * 8 + half * 4 + lane % 4;
          out[g * D + d] = static_cast<at::BFloat16>(a[lane] * inv);
        }
      }
    }
  }
}
#endif

}  // namespace sagellm_avx512
