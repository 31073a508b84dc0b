// Unmasked attention of many queries over one shared key set: the prefix half of cascade
// prefill (attention_cascade.py), where every query of a group sees the whole shared prefix, and
// (with per-row key limits) the causal prefill of folded query heads (attention_folded.py).
//
// torch.ops.sagellm.prefix_attention(q [G, M, D], k [G, L, D], v [G, L, D], scale, limits=None)
//   -> (out [G, M, D] of q's dtype, lse [G, M] fp32)
// G independent heads (a KV head with its query heads folded into M); out is the softmax-weighted
// sum of v, lse the natural-log sum of exp(scale * q.k) per query, for the log-sum-exp merge.
// limits (int64 [G, M], optional): query m of head g sees keys 0 .. limits[g, m] - 1 only
// (clamped to 1 .. L; a causal mask), else every key.
// D a multiple of 32 up to 128. float32 where the compiler targets AVX-512F; bfloat16 where it
// targets AVX512-BF16 (vdpbf16ps: 32 bf16 products summed into 16 fp32 lanes per instruction).
// The op is absent without AVX-512F; prefix_attention_dtypes() names what it serves.
//
// K is first repacked per 16-key chunk so that q.k has keys in the lanes:
//   bf16  kt[c][p]    = 16 keys' (d = 2p, 2p + 1) pairs            (one zmm per d pair)
//         vt[c][j][b] = 16 head dims (block b) x keys 2j, 2j + 1    (one zmm per key pair, block)
//   fp32  kt[c][d]    = 16 keys' dimension d                        (one zmm per d); v is read
//                       in place (p.v broadcasts a key's weight over its row's head dims)
// A task is R query rows of one head: per chunk it forms R x 16 scores (q values or pairs
// broadcast from memory), runs an online softmax (running max, rescaled fp32 accumulators; the
// denominator stays a vector until the end) and accumulates p.v in R x D/16 fp32 registers.
// Scores, softmax and accumulators are fp32; in bf16 q, k, v and p are bf16 (SDPA on bf16 inputs
// also multiplies bf16 p by bf16 v).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include "vec_avx512.h"

namespace {

using bf16 = at::BFloat16;

// fp32 kt: [C][D][16] floats of one head, keys past L zero
void repack(const float* k, int64_t L, int64_t D, float* kt) {
  const int64_t C = (L + 15) / 16;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t s = 0; s < 16; ++s) {
      const int64_t key = c * 16 + s;
      for (int64_t d = 0; d < D; ++d) kt[(c * D + d) * 16 + s] = key < L ? k[key * D + d] : 0.f;
    }
}

// One chunk's online-softmax step for a row: scores s (times scale; lanes past `live` keys
// masked) against the running max mx, rescaling the row's accumulators and denominator when
// the max grows. Returns the chunk's probabilities (0 in masked lanes).
template <int NB>
inline __m512 softmax_step(__m512 s, int64_t live, float scale, float& mx, __m512& den,
                           __m512* acc) {
  const __mmask16 m = live >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << live) - 1);
  const __m512 sc = _mm512_mask_mov_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()),
                                       m, _mm512_mul_ps(s, _mm512_set1_ps(scale)));
  const float nm = std::max(mx, _mm512_reduce_max_ps(sc));
  if (nm > mx) {
    const __m512 a = _mm512_set1_ps(std::exp(mx - nm));
    den = _mm512_mul_ps(den, a);
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_mul_ps(acc[b], a);
    mx = nm;
  }
  const __m512 e =
      _mm512_maskz_mov_ps(m, sagellm_avx512::exp16(_mm512_sub_ps(sc, _mm512_set1_ps(nm))));
  den = _mm512_add_ps(den, e);
  return e;
}

// The online-softmax state of a tile's R rows (P.V accumulators, vector denominators, running
// maxima), for both tiles: the longest row's limit decides the chunks the tile visits; step()
// runs one chunk's softmax for row r; finish() writes out = acc / denominator (store(r, b, v)
// rounds block b of row r) and the log-sum-exp of each of the first `rows` rows.
template <int R, int NB>
struct RowState {
  __m512 acc[R][NB], den[R];
  float mx[R];
  int64_t keys = 0, chunks;  // the longest row's limit, and the 16-key chunks it spans

  explicit RowState(const int64_t* lim) {
    for (int r = 0; r < R; ++r) {
      keys = std::max(keys, lim[r]);
      for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_ps();
      den[r] = _mm512_setzero_ps();
      mx[r] = -std::numeric_limits<float>::infinity();
    }
    chunks = (keys + 15) / 16;
  }

  __m512 step(int r, __m512 s, int64_t live, float scale) {
    return softmax_step<NB>(s, live, scale, mx[r], den[r], acc[r]);
  }

  template <typename Store>
  void finish(int rows, float* lse, const Store& store) {
    for (int r = 0; r < rows; ++r) {
      const float l = _mm512_reduce_add_ps(den[r]);
      const __m512 inv = _mm512_set1_ps(1.f / l);
      for (int b = 0; b < NB; ++b) store(r, b, _mm512_mul_ps(acc[r][b], inv));
      lse[r] = mx[r] + std::log(l);
    }
  }
};

// fp32: R query rows of one head over kt (repacked keys) and v [L, D] read in place. q.k keeps
// two accumulators per row (even and odd head dims) so 2R independent FMA chains are in flight.
template <int R, int NB>
void tile(const float* const* qrow, int rows, const int64_t* lim, const float* kt,
          const float* v, int64_t D, float scale, float* const* orow, float* lse) {
  RowState<R, NB> st(lim);
  alignas(64) float pr[R][16];
  for (int64_t c = 0; c < st.chunks; ++c) {
    __m512 s0[R], s1[R];
    for (int r = 0; r < R; ++r) s0[r] = s1[r] = _mm512_setzero_ps();
    const float* kc = kt + c * D * 16;
    for (int64_t d = 0; d < D; d += 2) {
      const __m512 k0 = _mm512_loadu_ps(kc + d * 16), k1 = _mm512_loadu_ps(kc + (d + 1) * 16);
      for (int r = 0; r < R; ++r) {
        s0[r] = _mm512_fmadd_ps(_mm512_set1_ps(qrow[r][d]), k0, s0[r]);
        s1[r] = _mm512_fmadd_ps(_mm512_set1_ps(qrow[r][d + 1]), k1, s1[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      const int64_t live = lim[r] - c * 16;
      if (live <= 0) {  // this row's keys ended in an earlier chunk
        _mm512_store_ps(pr[r], _mm512_setzero_ps());
        continue;
      }
      _mm512_store_ps(pr[r], st.step(r, _mm512_add_ps(s0[r], s1[r]), live, scale));
    }
    const int64_t n = std::min<int64_t>(16, st.keys - c * 16);  // keys < L: rows of v to read
    for (int64_t j = 0; j < n; ++j) {
      const float* vr = v + (c * 16 + j) * D;
      for (int b = 0; b < NB; ++b) {
        const __m512 vv = _mm512_loadu_ps(vr + b * 16);
        for (int r = 0; r < R; ++r)
          st.acc[r][b] = _mm512_fmadd_ps(_mm512_set1_ps(pr[r][j]), vv, st.acc[r][b]);
      }
    }
  }
  st.finish(rows, lse, [&](int r, int b, __m512 o) { _mm512_storeu_ps(orow[r] + b * 16, o); });
}

#if defined(__AVX512BF16__)

inline uint32_t pair_of(const bf16* p) {  // two adjacent bf16 as one 32-bit lane
  uint32_t u;
  std::memcpy(&u, p, 4);
  return u;
}

inline uint32_t pair_of(bf16 a, bf16 b) {
  return static_cast<uint32_t>(a.x) | (static_cast<uint32_t>(b.x) << 16);
}

// kt: [C][D/2][16] and vt: [C][8][D] 32-bit lanes of one head; keys past L are zero
void repack(const bf16* k, const bf16* v, int64_t L, int64_t D, uint32_t* kt, uint32_t* vt) {
  const int64_t C = (L + 15) / 16, P = D / 2;
  const bf16 zero(0.f);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t s = 0; s < 16; ++s) {
      const int64_t key = c * 16 + s;
      for (int64_t p = 0; p < P; ++p)
        kt[(c * P + p) * 16 + s] = key < L ? pair_of(k + key * D + 2 * p) : 0u;
    }
    for (int64_t j = 0; j < 8; ++j) {
      const int64_t k0 = c * 16 + 2 * j, k1 = k0 + 1;
      for (int64_t d = 0; d < D; ++d)
        vt[(c * 8 + j) * D + d] =
            pair_of(k0 < L ? v[k0 * D + d] : zero, k1 < L ? v[k1 * D + d] : zero);
    }
  }
}

// R query rows (pointers may repeat for a short tail; only `rows` are written) of one head
template <int R, int NB>
void tile(const bf16* const* qrow, int rows, const int64_t* lim, const uint32_t* kt,
          const uint32_t* vt, int64_t D, float scale, bf16* const* orow, float* lse) {
  const int64_t P = D / 2;
  RowState<R, NB> st(lim);
  alignas(64) uint32_t pb[R][8];
  for (int64_t c = 0; c < st.chunks; ++c) {
    __m512 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm512_setzero_ps();
    const uint32_t* kc = kt + c * P * 16;
    for (int64_t p = 0; p < P; ++p) {
      const __m512bh kk = (__m512bh)_mm512_loadu_si512(kc + p * 16);
      for (int r = 0; r < R; ++r)
        s[r] = _mm512_dpbf16_ps(s[r], kk, (__m512bh)_mm512_set1_epi32(pair_of(qrow[r] + 2 * p)));
    }
    for (int r = 0; r < R; ++r) {
      const int64_t live = lim[r] - c * 16;
      if (live <= 0) {  // this row's keys ended in an earlier chunk
        std::fill(pb[r], pb[r] + 8, 0u);
        continue;
      }
      const __m512 e = st.step(r, s[r], live, scale);
      _mm256_store_si256(reinterpret_cast<__m256i*>(pb[r]), (__m256i)_mm512_cvtneps_pbh(e));
    }
    const uint32_t* vc = vt + c * 8 * D;
    for (int j = 0; j < 8; ++j) {
      for (int b = 0; b < NB; ++b) {
        const __m512bh vv = (__m512bh)_mm512_loadu_si512(vc + j * D + b * 16);
        for (int r = 0; r < R; ++r)
          st.acc[r][b] =
              _mm512_dpbf16_ps(st.acc[r][b], vv, (__m512bh)_mm512_set1_epi32(pb[r][j]));
      }
    }
  }
  st.finish(rows, lse, [&](int r, int b, __m512 o) {
    const __m256bh h = _mm512_cvtneps_pbh(o);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(orow[r] + b * 16), (__m256i)h);
  });
}

#endif  // __AVX512BF16__

// Repacks each head's keys (bf16: and values), then runs R-row tiles of every head in parallel.
template <typename T, int R, int NB>
void run(const T* q, const T* k, const T* v, const int64_t* limits, float scale, T* out,
         float* lse, int64_t G, int64_t M, int64_t L, int64_t D) {
  constexpr bool kBf16 = std::is_same_v<T, bf16>;
  using Lane = std::conditional_t<kBf16, uint32_t, float>;
  const int64_t C = (L + 15) / 16;
  const int64_t kt_len = C * D * 16 / (kBf16 ? 2 : 1), vt_len = kBf16 ? C * 8 * D : 0;
  std::vector<Lane> kt(G * kt_len), vt(G * vt_len);
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      if constexpr (kBf16) {
        repack(k + g * L * D, v + g * L * D, L, D, &kt[g * kt_len], &vt[g * vt_len]);
      } else {
        repack(k + g * L * D, L, D, &kt[g * kt_len]);
      }
    }
  });
  const int64_t tiles = (M + R - 1) / R;
  at::parallel_for(0, G * tiles, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / tiles, m0 = (t % tiles) * R;
      const int rows = static_cast<int>(std::min<int64_t>(R, M - m0));
      const T* qr[R];
      T* orow[R];
      int64_t lim[R];
      for (int r = 0; r < R; ++r) {
        const int64_t m = m0 + std::min(r, rows - 1);
        qr[r] = q + (g * M + m) * D;
        orow[r] = out + (g * M + m) * D;
        lim[r] = limits == nullptr ? L : std::clamp<int64_t>(limits[g * M + m], 1, L);
      }
      const Lane* vg = kBf16 ? &vt[g * vt_len] : reinterpret_cast<const Lane*>(v + g * L * D);
      tile<R, NB>(qr, rows, lim, &kt[g * kt_len], vg, D, scale, orow, lse + g * M + m0);
    }
  });
}

template <typename T>
void run_head_size(const T* q, const T* k, const T* v, const int64_t* limits, float scale,
                   T* out, float* lse, int64_t G, int64_t M, int64_t L, int64_t D) {
  if (D == 32) {
    run<T, 4, 2>(q, k, v, limits, scale, out, lse, G, M, L, D);
  } else if (D == 64) {
    run<T, 4, 4>(q, k, v, limits, scale, out, lse, G, M, L, D);
  } else if (D == 96) {
    run<T, 2, 6>(q, k, v, limits, scale, out, lse, G, M, L, D);
  } else {
    run<T, 2, 8>(q, k, v, limits, scale, out, lse, G, M, L, D);
  }
}

#if defined(__AVX512BF16__)
constexpr bool kServesBf16 = true;
#else
constexpr bool kServesBf16 = false;
#endif

std::tuple<at::Tensor, at::Tensor> prefix_attention(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, double scale,
                                                    const std::optional<at::Tensor>& limits) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "prefix_attention: 3-D q, k, v");
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous(),
              "prefix_attention: contiguous q, k, v");
  const at::ScalarType dt = q.scalar_type();
  TORCH_CHECK(k.scalar_type() == dt && v.scalar_type() == dt &&
                  (dt == at::kFloat || (dt == at::kBFloat16 && kServesBf16)),
              "prefix_attention: q, k, v of one dtype: float32",
              kServesBf16 ? " or bfloat16" : " (bfloat16 needs AVX512-BF16)");
  const int64_t G = q.size(0), M = q.size(1), D = q.size(2), L = k.size(1);
  TORCH_CHECK(k.size(0) == G && v.size(0) == G && k.size(2) == D && v.size(1) == L &&
                  v.size(2) == D && L > 0,
              "prefix_attention: q [G, M, D], k and v [G, L > 0, D]");
  TORCH_CHECK(D % 32 == 0 && D <= 128, "prefix_attention: head size a multiple of 32 up to 128");
  const int64_t* lp0 = nullptr;
  if (limits.has_value()) {
    TORCH_CHECK(limits->scalar_type() == at::kLong && limits->is_contiguous() &&
                    limits->numel() == G * M,
                "prefix_attention: limits a contiguous int64 [G, M]");
    lp0 = limits->data_ptr<int64_t>();
  }
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({G, M}, q.options().dtype(at::kFloat));
  float* lp = lse.data_ptr<float>();
  const float s = static_cast<float>(scale);
  if (dt == at::kFloat) {
    run_head_size(q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), lp0, s,
                  out.data_ptr<float>(), lp, G, M, L, D);
  }
#if defined(__AVX512BF16__)
  if (dt == at::kBFloat16) {
    run_head_size(q.data_ptr<bf16>(), k.data_ptr<bf16>(), v.data_ptr<bf16>(), lp0, s,
                  out.data_ptr<bf16>(), lp, G, M, L, D);
  }
#endif
  return {out, lse};
}

// The dtypes prefix_attention serves on this build (float32; bfloat16 with AVX512-BF16).
std::vector<std::string> prefix_attention_dtypes() {
  std::vector<std::string> d{"float32"};
  if (kServesBf16) d.push_back("bfloat16");
  return d;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sagellm, m) {
  m.def(
      "prefix_attention(Tensor q, Tensor k, Tensor v, float scale, Tensor? limits=None) -> "
      "(Tensor, Tensor)");
  m.def("prefix_attention_dtypes() -> str[]", &prefix_attention_dtypes);
}

TORCH_LIBRARY_IMPL(sagellm, CPU, m) { m.impl("prefix_attention", &prefix_attention); }

#endif  // __AVX512F__
