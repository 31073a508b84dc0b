// Unmasked bf16 attention of many queries over one shared key set: the prefix half of cascade
// prefill (attention_cascade.py), where every query of a group sees the whole shared prefix.
//
// torch.ops.sagellm.prefix_attention(q [G, M, D], k [G, L, D], v [G, L, D], scale, limits=None)
//   -> (out [G, M, D] bf16, lse [G, M] fp32)
// G independent heads (a KV head with its query heads folded into M); out is the softmax-weighted
// sum of v, lse the natural-log sum of exp(scale * q.k) per query, for the log-sum-exp merge.
// limits (int64 [G, M], optional): query m of head g sees keys 0 .. limits[g, m] - 1 only
// (clamped to 1 .. L; a causal mask), else every key.
// bf16 only, D a multiple of 32 up to 128; built where the compiler targets AVX512-BF16
// (vdpbf16ps: 32 bf16 products summed into 16 fp32 lanes per instruction), absent otherwise.
//
// K and V are first repacked per 16-key chunk so that both products are dot-product
// instructions with keys (for q.k) or head dims (for p.v) in the lanes:
//   kt[c][p]    = 16 keys' (d = 2p, 2p + 1) pairs           (one zmm per d pair)
//   vt[c][j][b] = 16 head dims (block b) x keys 2j, 2j + 1   (one zmm per key pair and block)
// A task is R query rows of one head: per chunk it forms R x 16 scores (q pairs broadcast from
// memory), runs an online softmax (running max, rescaled fp32 accumulators; the denominator
// stays a vector until the end), rounds the probabilities to bf16 and accumulates p.v in R x D/16
// fp32 registers. Scores, softmax and accumulators are fp32; only q, k, v and p are bf16 (SDPA
// on bf16 inputs also multiplies bf16 p by bf16 v).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX512BF16__)
#include "attention_avx512.h"

namespace {

using bf16 = at::BFloat16;

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
  int64_t keys = 0;  // the tile's longest row decides the chunks it visits
  for (int r = 0; r < R; ++r) keys = std::max(keys, lim[r]);
  const int64_t C = (keys + 15) / 16, P = D / 2;
  __m512 acc[R][NB], den[R];
  float mx[R];
  for (int r = 0; r < R; ++r) {
    for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_ps();
    den[r] = _mm512_setzero_ps();
    mx[r] = -std::numeric_limits<float>::infinity();
  }
  const __m512 vscale = _mm512_set1_ps(scale);
  alignas(64) uint32_t pb[R][8];
  for (int64_t c = 0; c < C; ++c) {
    __m512 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm512_setzero_ps();
    const uint32_t* kc = kt + c * P * 16;
    for (int64_t p = 0; p < P; ++p) {
      const __m512bh kk = (__m512bh)_mm512_loadu_si512(kc + p * 16);
      for (int r = 0; r < R; ++r)
        s[r] = _mm512_dpbf16_ps(s[r], kk, (__m512bh)_mm512_set1_epi32(pair_of(qrow[r] + 2 * p)));
    }
    for (int r = 0; r < R; ++r) {
      const int64_t live = std::min<int64_t>(16, lim[r] - c * 16);
      if (live <= 0) {  // this row's keys ended in an earlier chunk
        std::fill(pb[r], pb[r] + 8, 0u);
        continue;
      }
      const __mmask16 m = live == 16 ? __mmask16(0xFFFF) : __mmask16((1u << live) - 1);
      const __m512 sc = _mm512_mask_mov_ps(
          _mm512_set1_ps(-std::numeric_limits<float>::infinity()), m, _mm512_mul_ps(s[r], vscale));
      const float nm = std::max(mx[r], _mm512_reduce_max_ps(sc));
      if (nm > mx[r]) {
        const __m512 a = _mm512_set1_ps(std::exp(mx[r] - nm));
        den[r] = _mm512_mul_ps(den[r], a);
        for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_mul_ps(acc[r][b], a);
        mx[r] = nm;
      }
      const __m512 e = _mm512_maskz_mov_ps(m, sagellm_avx512::exp16(_mm512_sub_ps(sc, _mm512_set1_ps(nm))));
      den[r] = _mm512_add_ps(den[r], e);
      _mm256_store_si256(reinterpret_cast<__m256i*>(pb[r]), (__m256i)_mm512_cvtneps_pbh(e));
    }
    const uint32_t* vc = vt + c * 8 * D;
    for (int j = 0; j < 8; ++j) {
      for (int b = 0; b < NB; ++b) {
        const __m512bh vv = (__m512bh)_mm512_loadu_si512(vc + j * D + b * 16);
        for (int r = 0; r < R; ++r)
          acc[r][b] = _mm512_dpbf16_ps(acc[r][b], vv, (__m512bh)_mm512_set1_epi32(pb[r][j]));
      }
    }
  }
  for (int r = 0; r < rows; ++r) {
    const float l = _mm512_reduce_add_ps(den[r]);
    const __m512 inv = _mm512_set1_ps(1.f / l);
    for (int b = 0; b < NB; ++b) {
      const __m256bh o = _mm512_cvtneps_pbh(_mm512_mul_ps(acc[r][b], inv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(orow[r] + b * 16), (__m256i)o);
    }
    lse[r] = mx[r] + std::log(l);
  }
}

template <int R, int NB>
void run(const bf16* q, const bf16* k, const bf16* v, const int64_t* limits, float scale,
         bf16* out, float* lse, int64_t G, int64_t M, int64_t L, int64_t D) {
  const int64_t C = (L + 15) / 16;
  const int64_t kt_len = C * (D / 2) * 16, vt_len = C * 8 * D;
  std::vector<uint32_t> kt(G * kt_len), vt(G * vt_len);
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      repack(k + g * L * D, v + g * L * D, L, D, &kt[g * kt_len], &vt[g * vt_len]);
  });
  const int64_t tiles = (M + R - 1) / R;
  at::parallel_for(0, G * tiles, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / tiles, m0 = (t % tiles) * R;
      const int rows = static_cast<int>(std::min<int64_t>(R, M - m0));
      const bf16* qr[R];
      bf16* orow[R];
      int64_t lim[R];
      for (int r = 0; r < R; ++r) {
        const int64_t m = m0 + std::min(r, rows - 1);
        qr[r] = q + (g * M + m) * D;
        orow[r] = out + (g * M + m) * D;
        lim[r] = limits == nullptr ? L : std::clamp<int64_t>(limits[g * M + m], 1, L);
      }
      tile<R, NB>(qr, rows, lim, &kt[g * kt_len], &vt[g * vt_len], D, scale, orow,
                  lse + g * M + m0);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> prefix_attention(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, double scale,
                                                    const std::optional<at::Tensor>& limits) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "prefix_attention: 3-D q, k, v");
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous(),
              "prefix_attention: contiguous q, k, v");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
                  v.scalar_type() == at::kBFloat16,
              "prefix_attention: bfloat16 q, k, v");
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
  const auto* qp = q.data_ptr<bf16>();
  const auto* kp = k.data_ptr<bf16>();
  const auto* vp = v.data_ptr<bf16>();
  auto* op = out.data_ptr<bf16>();
  float* lp = lse.data_ptr<float>();
  const float s = static_cast<float>(scale);
  if (D == 32) {
    run<4, 2>(qp, kp, vp, lp0, s, op, lp, G, M, L, D);
  } else if (D == 64) {
    run<4, 4>(qp, kp, vp, lp0, s, op, lp, G, M, L, D);
  } else if (D == 96) {
    run<2, 6>(qp, kp, vp, lp0, s, op, lp, G, M, L, D);
  } else {
    run<2, 8>(qp, kp, vp, lp0, s, op, lp, G, M, L, D);
  }
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sagellm, m) {
  m.def(
      "prefix_attention(Tensor q, Tensor k, Tensor v, float scale, Tensor? limits=None) -> "
      "(Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sagellm, CPU, m) { m.impl("prefix_attention", &prefix_attention); }

#endif  // __AVX512BF16__
