// Every decoder layer of one step in a single call: the decode-shaped steps (each sequence
// brings at most a few new tokens) whose time was mostly Python dispatch of ~50 small torch ops
// per layer, not arithmetic.
//
// Registered as torch.ops.sagellm.decoder_layers(x, weights, kv, cos, sin, kv_rows, block_ids,
// q_starts, q_lens, num_computed, max_blocks, num_heads, eps, scale, gemv_max_rows,
// transposed_min_rows, transposed_max_rows). Shapes (contiguous, one dtype: float32 or
// bfloat16, index tensors int64):
//   x          [T, hidden]   the residual stream after the embedding; updated in place
//   weights    12 per layer: input_norm [hidden], qkv [(H + 2 kvH) D, hidden], qkv_bias
//              [(H + 2 kvH) D] or empty, o [hidden, H D], o_bias [hidden] or empty,
//              post_norm [hidden], gate_up [2 I, hidden], down [hidden, I], then the
//              prepacked qkv, o, gate_up, down (linear.pack_weight: oneDNN tensors, or
//              gemm_packed.cpp's layout on AVX-512 and AVX2 CPUs) or empty tensors
//   kv         [L, 2, N, kvH, bs, D]   the paged cache (kv_cache.py); new K/V rows are written
//   cos, sin   [T, D]        RoPE rows of each token's position (already scaled, in the dtype)
//   kv_rows    [T * kvH]     row of (token, kv head) in one layer's K (or V) viewed as [-1, D]
//   block_ids .. max_blocks  one entry per attention group (attention.AttnGroup)
// The layer is the model.py forward, op for op: RMSNorm in fp32 rounded to the dtype then
// scaled by its weight; fused q|k|v GEMM (+ bias); RoPE (rotate-half) with the products and the
// sum each rounded to the dtype as torch rounds them; K/V written to the cache; paged
// attention (paged_attention.cpp); o GEMM (+ bias) added to x; RMSNorm; gate|up GEMM; silu(gate)
// * up (torch's own ops); down GEMM added to x. Linears with a packed weight and at least
// packed_min_rows rows use oneDNN's GEMM on it (gemm_packed.cpp's on its layout); else at most
// gemv_max_rows rows the GEMV (gemv.cpp), rows in [transposed_min_rows, transposed_max_rows)
// the transposed GEMM (W . x^T)^T, others x . W^T, exactly as linear.linear chooses. Sums run
// in another order than torch's, so results agree to rounding, not bitwise.
#include "ops.h"
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include "vec_avx512.h"
#elif defined(__AVX2__) && defined(__FMA__)
#include "vec_avx2.h"
#endif

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kPlain = 8, kPerLayer = 12;

struct LinearRows {
  int64_t gemv_max, transposed_min, transposed_max, packed_min;
};

// oneDNN's GEMM over a prepacked weight (torch.ops.mkldnn._linear_pointwise), with the bias
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& b) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            c10::string_view, c10::List<std::optional<at::Scalar>>,
                            std::optional<c10::string_view>)>();
  const std::optional<at::Tensor> bias = b.numel() ? std::optional<at::Tensor>(b) : std::nullopt;
  return op.call(x, packed, bias, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

// oneDNN runs bf16 GEMMs natively with AVX-512 BW/VL/DQ or AVX-NE-CONVERT (its own check);
// elsewhere (AVX2 only) bf16 linears widen to fp32 as linear.widened_linear does
#if (defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)) || \
    defined(__AVXNECONVERT__)
constexpr bool kBf16GemmNative = true;
#else
constexpr bool kBf16GemmNative = false;
#endif
constexpr int64_t kWidenChunkRows = 1024;  // linear.WIDEN_CHUNK_ROWS

at::Tensor widened_linear(const at::Tensor& x, const at::Tensor& w) {
  const at::Tensor xt = x.to(at::kFloat).t();
  at::Tensor out_t = at::empty({w.size(0), x.size(0)}, x.options().dtype(at::kFloat));
  for (int64_t o = 0; o < w.size(0); o += kWidenChunkRows) {
    const int64_t n = std::min(kWidenChunkRows, w.size(0) - o);
    at::Tensor dst = out_t.narrow(0, o, n);
    at::mm_out(dst, w.narrow(0, o, n).to(at::kFloat), xt);
  }
  return out_t.t().to(x.scalar_type()).contiguous();
}

// buf: the step's output buffer of this linear ([M, w.size(0)], contiguous), where the GEMV and
// our packed GEMM write; the other paths return a new tensor
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                  const at::Tensor& packed, const LinearRows& rows, at::Tensor buf) {
  const int64_t M = x.size(0);
  if (packed.numel() && M >= rows.packed_min) {
    if (packed.is_mkldnn()) return packed_linear(x, packed, b);
#ifdef SAGELLM_GEMM_PACKED
    sagellm::gemm_packed(x, packed, b, buf);
    return buf;
#else
    TORCH_CHECK(false, "decoder_layers: a pack_gemm weight needs AVX-512F or AVX2 with FMA");
#endif
  }
  at::Tensor y;
  if (M <= rows.gemv_max) {
    y = buf;
    sagellm::gemv(x, w, y);
  } else if (!kBf16GemmNative && x.scalar_type() == at::kBFloat16) {
    y = widened_linear(x, w);
  } else if (M >= rows.transposed_min && M < rows.transposed_max) {
    y = at::mm(w, x.t()).t().contiguous();
  } else {
    y = at::mm(x, w.t());
  }
  if (b.numel()) y.add_(b);
  return y;
}

template <typename T>
inline float f(T v) {
  return static_cast<float>(v);
}

// out[m] = w * to_dtype(x[m] / sqrt(mean(x[m]^2) + eps)), the mean in fp32
// Row loops below split rows across torch's threads from this many rows on (fewer are not
// worth a fork/join; at 64 rows a serial loop left the other thread spinning in the runtime)
constexpr int64_t kParallelRows = 8;

template <typename F>
void for_rows(int64_t M, const F& body) {
  if (M < kParallelRows) {
    body(0, M);
  } else {
    at::parallel_for(0, M, kParallelRows / 2, body);
  }
}

// Row kernels below take AVX-512 paths for row widths that are multiples of 16 where the CPU
// has AVX512-BF16 (its conversions round bf16 as torch does), and AVX2 paths for bf16 rows of
// widths that are multiples of 8 on AVX2 CPUs without it (the scalar loops convert bf16 one
// element at a time: a decode step of SmolLM2 spent 12 us a layer in them; fp32 ones vectorize
// as they are); the scalar loops are the same arithmetic, element by element, for the rest.
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define SAGELLM_ROWS_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define SAGELLM_ROWS_AVX2 1
template <typename T>
constexpr bool kRowsAvx2 = std::is_same_v<T, at::BFloat16>;
#endif

template <typename T>
void rms_norm_rows(const T* x, const T* w, T* out, int64_t m0, int64_t m1, int64_t N, float eps) {
  for (int64_t m = m0; m < m1; ++m) {
    const T* xr = x + m * N;
    T* o = out + m * N;
    float ss = 0.f;
#ifdef SAGELLM_ROWS_AVX512
    if (N % 16 == 0) {
      using namespace sagellm_avx512;
      __m512 acc = _mm512_setzero_ps();
      for (int64_t j = 0; j < N; j += 16) {
        const __m512 v = load16(xr + j);
        acc = _mm512_fmadd_ps(v, v, acc);
      }
      const __m512 r = _mm512_set1_ps(1.f / std::sqrt(_mm512_reduce_add_ps(acc) / N + eps));
      for (int64_t j = 0; j < N; j += 16)
        store16(o + j, _mm512_mul_ps(load16(w + j), round16<T>(_mm512_mul_ps(load16(xr + j), r))));
      continue;
    }
#endif
#ifdef SAGELLM_ROWS_AVX2
    if (kRowsAvx2<T> && N % 8 == 0) {
      using namespace sagellm_avx2;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t j = 0; j < N; j += 8) {
        const __m256 v = load8(xr + j);
        acc = _mm256_fmadd_ps(v, v, acc);
      }
      const __m256 r = _mm256_set1_ps(1.f / std::sqrt(hadd8(acc) / N + eps));
      for (int64_t j = 0; j < N; j += 8)
        store8(o + j, _mm256_mul_ps(load8(w + j), round8<T>(_mm256_mul_ps(load8(xr + j), r))));
      continue;
    }
#endif
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < N; ++j) ss += f(xr[j]) * f(xr[j]);
    const float r = 1.f / std::sqrt(ss / static_cast<float>(N) + eps);
#pragma omp simd
    for (int64_t j = 0; j < N; ++j) o[j] = static_cast<T>(f(w[j]) * f(static_cast<T>(f(xr[j]) * r)));
  }
}

template <typename T>
void rms_norm(const T* x, const T* w, T* out, int64_t M, int64_t N, float eps) {
  for_rows(M, [&](int64_t m0, int64_t m1) { rms_norm_rows(x, w, out, m0, m1, N, eps); });
}

// dst = src * cos + rotate_half(src) * sin, each product and the sum rounded to T
template <typename T>
inline void rope(const T* src, const T* cos, const T* sin, T* dst, int64_t D) {
  const int64_t half = D / 2;
#ifdef SAGELLM_ROWS_AVX512
  if (half % 16 == 0) {
    using namespace sagellm_avx512;
    const __m512 neg = _mm512_set1_ps(-0.f);
    for (int64_t j = 0; j < D; j += 16) {
      const __m512 other = load16(j < half ? src + j + half : src + j - half);
      const __m512 rot = j < half ? _mm512_xor_ps(other, neg) : other;
      const __m512 a = round16<T>(_mm512_mul_ps(load16(src + j), load16(cos + j)));
      const __m512 b = round16<T>(_mm512_mul_ps(rot, load16(sin + j)));
      store16(dst + j, _mm512_add_ps(a, b));
    }
    return;
  }
#endif
#ifdef SAGELLM_ROWS_AVX2
  if (kRowsAvx2<T> && half % 8 == 0) {
    using namespace sagellm_avx2;
    const __m256 neg = _mm256_set1_ps(-0.f);
    for (int64_t j = 0; j < D; j += 8) {
      const __m256 other = load8(j < half ? src + j + half : src + j - half);
      const __m256 rot = j < half ? _mm256_xor_ps(other, neg) : other;
      const __m256 a = round8<T>(_mm256_mul_ps(load8(src + j), load8(cos + j)));
      const __m256 b = round8<T>(_mm256_mul_ps(rot, load8(sin + j)));
      store8(dst + j, _mm256_add_ps(a, b));
    }
    return;
  }
#endif
  for (int64_t j = 0; j < D; ++j) {
    const float rot = j < half ? -f(src[j + half]) : f(src[j - half]);
    const T a = static_cast<T>(f(src[j]) * f(cos[j]));
    const T b = static_cast<T>(rot * f(sin[j]));
    dst[j] = static_cast<T>(f(a) + f(b));
  }
}

template <typename T>
void add_into(T* x, const T* y, int64_t M, int64_t N) {
  for_rows(M, [&](int64_t m0, int64_t m1) {
    int64_t i = m0 * N;
#ifdef SAGELLM_ROWS_AVX512
    using namespace sagellm_avx512;
    for (; i + 16 <= m1 * N; i += 16) store16(x + i, _mm512_add_ps(load16(x + i), load16(y + i)));
#endif
#ifdef SAGELLM_ROWS_AVX2
    if constexpr (kRowsAvx2<T>) {
      using namespace sagellm_avx2;
      for (; i + 8 <= m1 * N; i += 8) store8(x + i, _mm256_add_ps(load8(x + i), load8(y + i)));
    }
#endif
#pragma omp simd
    for (int64_t k = i; k < m1 * N; ++k) x[k] = static_cast<T>(f(x[k]) + f(y[k]));
  });
}

// out[m] = silu(gate[m]) * up[m] for the rows of gu = [gate | up] [M, 2 I], in one pass:
// silu(x) = x / (1 + e^-x) as torch computes it, rounded to T before the product (as torch's
// silu then mul round). e^x is exp8/exp16's polynomial, not torch's Sleef exp, so fp32 results
// agree with torch's to an ulp or so. In a W1 fp32 profile (Zen 3, 2 threads) this pass took
// 1.1% of the samples where torch's silu then mul took 1.7%.
template <typename T>
at::Tensor silu_mul(const at::Tensor& gu, at::Tensor out) {
  const int64_t M = gu.size(0), I = gu.size(1) / 2;
#ifdef SAGELLM_ROWS_AVX512
  if (I % 16 == 0 && gu.is_contiguous()) {
    const T* g = gu.data_ptr<T>();
    T* o = out.data_ptr<T>();
    for_rows(M, [&](int64_t m0, int64_t m1) {
      using namespace sagellm_avx512;
      const __m512 one = _mm512_set1_ps(1.f), neg = _mm512_set1_ps(-0.f);
      for (int64_t m = m0; m < m1; ++m) {
        const T* gr = g + m * 2 * I;
        for (int64_t j = 0; j < I; j += 16) {
          const __m512 x = load16(gr + j);
          const __m512 s = _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_xor_ps(x, neg))));
          store16(o + m * I + j, _mm512_mul_ps(round16<T>(s), load16(gr + I + j)));
        }
      }
    });
    return out;
  }
#endif
#ifdef SAGELLM_ROWS_AVX2
  if (I % 8 == 0 && gu.is_contiguous()) {
    const T* g = gu.data_ptr<T>();
    T* o = out.data_ptr<T>();
    for_rows(M, [&](int64_t m0, int64_t m1) {
      using namespace sagellm_avx2;
      const __m256 one = _mm256_set1_ps(1.f), neg = _mm256_set1_ps(-0.f);
      for (int64_t m = m0; m < m1; ++m) {
        const T* gr = g + m * 2 * I;
        for (int64_t j = 0; j < I; j += 8) {
          const __m256 x = load8(gr + j);
          const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_xor_ps(x, neg))));
          store8(o + m * I + j, _mm256_mul_ps(round8<T>(s), load8(gr + I + j)));
        }
      }
    });
    return out;
  }
#endif
  at::silu_out(out, gu.narrow(1, 0, I));
  return out.mul_(gu.narrow(1, I, I));
}

// A step's intermediate tensors, made once per call and reused by every layer (a fresh
// tensor per use was ~10 allocator calls per layer: 300 per decode step of SmolLM2). Each half
// of a layer makes only its own: qkv_width 0 skips layer_in's, inter 0 layer_out's.
struct Buffers {
  at::Tensor h, qkv, q, y, gu, act, none;

  Buffers(const at::Tensor& x, int64_t qkv_width, int64_t H, int64_t D, int64_t inter) {
    const int64_t T_ = x.size(0);
    h = at::empty_like(x);
    if (qkv_width) {
      qkv = at::empty({T_, qkv_width}, x.options());
      q = at::empty({T_, H, D}, x.options());
    }
    if (inter) {
      y = at::empty_like(x);
      gu = at::empty({T_, 2 * inter}, x.options());
      act = at::empty({T_, inter}, x.options());
      none = at::empty({0}, x.options());
    }
  }
};

// The layer up to attention: h = RMSNorm(x); q|k|v = h . Wqkv^T (+ bias); q and k rotated
// (RoPE); each token's K and V rows written to the layer's cache at kv_rows. Returns q [T, H, D].
template <typename T>
at::Tensor layer_in(const at::Tensor& x, const at::Tensor* w, at::Tensor& k_cache,
                    at::Tensor& v_cache, const at::Tensor& cos, const at::Tensor& sin,
                    const at::Tensor& kv_rows, int64_t H, float eps, const LinearRows& rows,
                    Buffers& buf) {
  const int64_t T_ = x.size(0), hidden = x.size(1);
  const int64_t kvH = k_cache.size(1), D = k_cache.size(3);
  const int64_t qkv_width = (H + 2 * kvH) * D;
  const int64_t* kvr = kv_rows.data_ptr<int64_t>();
  const T* cp = cos.data_ptr<T>();
  const T* sp = sin.data_ptr<T>();
  T* kc = k_cache.data_ptr<T>();
  T* vc = v_cache.data_ptr<T>();
  const at::Tensor& h = buf.h;
  rms_norm<T>(x.data_ptr<T>(), w[0].data_ptr<T>(), h.data_ptr<T>(), T_, hidden, eps);
  const at::Tensor qkv = linear(h, w[1], w[2], w[8], rows, buf.qkv);
  const at::Tensor& q = buf.q;
  const T* qkvp = qkv.data_ptr<T>();
  T* qp = q.data_ptr<T>();
  for_rows(T_, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const T* row = qkvp + t * qkv_width;
      const T* c = cp + t * D;
      const T* s = sp + t * D;
      for (int64_t hd = 0; hd < H; ++hd) rope<T>(row + hd * D, c, s, qp + (t * H + hd) * D, D);
      for (int64_t kh = 0; kh < kvH; ++kh) {
        const int64_t dst = kvr[t * kvH + kh] * D;
        rope<T>(row + (H + kh) * D, c, s, kc + dst, D);
        const T* v = row + (H + kvH + kh) * D;
        std::copy(v, v + D, vc + dst);
      }
    }
  });
  return q;
}

// The layer after attention, x updated in place: x += attn . Wo^T (+ bias);
// x += down(silu(gate) * up) of RMSNorm(x).
template <typename T>
void layer_out(at::Tensor& x, const at::Tensor& attn_rows, const at::Tensor* w, float eps,
               const LinearRows& rows, Buffers& buf) {
  const int64_t T_ = x.size(0), hidden = x.size(1);
  T* xp = x.data_ptr<T>();
  add_into<T>(xp, linear(attn_rows, w[3], w[4], w[9], rows, buf.y).data_ptr<T>(), T_, hidden);
  const at::Tensor& h = buf.h;
  rms_norm<T>(xp, w[5].data_ptr<T>(), h.data_ptr<T>(), T_, hidden, eps);
  const at::Tensor gu = linear(h, w[6], buf.none, w[10], rows, buf.gu);
  const at::Tensor act = silu_mul<T>(gu, buf.act);
  add_into<T>(xp, linear(act, w[7], buf.none, w[11], rows, buf.y).data_ptr<T>(), T_, hidden);
}

template <typename T>
void run(at::Tensor& x, const std::vector<at::Tensor>& weights, const at::Tensor& kv,
         const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& kv_rows,
         const std::vector<at::Tensor>& block_ids, const std::vector<at::Tensor>& q_starts,
         const std::vector<at::Tensor>& q_lens, const std::vector<at::Tensor>& num_computed,
         const std::vector<int64_t>& max_blocks, int64_t H, float eps, double scale,
         const LinearRows& rows) {
  const int64_t L = kv.size(0), T_ = x.size(0), kvH = kv.size(3), D = kv.size(5);
  Buffers buf(x, (H + 2 * kvH) * D, H, D, weights[6].size(0) / 2);
  const at::Tensor attn = at::empty({T_, H, D}, x.options());
  const at::Tensor attn_rows = attn.view({T_, H * D});
  // layer l's K and V [N, kvH, bs, D] as views made without the dispatcher (kv[l][0] was
  // two select ops per cache per layer)
  const std::vector<int64_t> cache_shape(kv.sizes().begin() + 2, kv.sizes().end());
  T* base = kv.data_ptr<T>();
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor* w = &weights[l * kPerLayer];
    at::Tensor k_cache = at::from_blob(base + (2 * l) * kv.stride(1), cache_shape, kv.options());
    at::Tensor v_cache =
        at::from_blob(base + (2 * l + 1) * kv.stride(1), cache_shape, kv.options());
    const at::Tensor q =
        layer_in<T>(x, w, k_cache, v_cache, cos, sin, kv_rows, H, eps, rows, buf);
    for (size_t g = 0; g < block_ids.size(); ++g) {
      sagellm::paged_attention(q, k_cache, v_cache, block_ids[g], q_starts[g], q_lens[g],
                               num_computed[g], max_blocks[g], scale, attn);
    }
    layer_out<T>(x, attn_rows, w, eps, rows, buf);
  }
}

void check_weights(const at::Tensor& x, at::TensorList weights, const char* op) {
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    TORCH_CHECK(w.scalar_type() == x.scalar_type(), op, ": weights of x's dtype");
    TORCH_CHECK(i % kPerLayer >= kPlain
                    ? (w.numel() == 0 || w.is_mkldnn() || (w.dim() == 3 && w.is_contiguous()))
                    : w.is_contiguous(),
                op, ": contiguous dense weights; packed ones oneDNN tensors, pack_gemm ",
                "[N / 16, K / P, 16 P] tensors or empty");
  }
}

// The RoPE rows and K/V destinations of a step's T tokens (head size D, kvH kv heads).
void check_rope_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& kv_rows, int64_t D, int64_t kvH, const char* op) {
  const int64_t T_ = x.size(0);
  TORCH_CHECK(cos.sizes() == sin.sizes() && cos.size(0) == T_ && cos.size(1) == D &&
                  cos.is_contiguous() && sin.is_contiguous() &&
                  cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type(),
              op, ": cos/sin [T, D] of x's dtype");
  TORCH_CHECK(kv_rows.scalar_type() == at::kLong && kv_rows.numel() == T_ * kvH, op,
              ": kv_rows [T * kvH] int64");
}

void decoder_layers(at::Tensor x, at::TensorList weights, const at::Tensor& kv,
                    const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& kv_rows,
                    at::TensorList block_ids, at::TensorList q_starts, at::TensorList q_lens,
                    at::TensorList num_computed, at::IntArrayRef max_blocks, int64_t num_heads,
                    double eps, double scale, int64_t gemv_max_rows, int64_t transposed_min_rows,
                    int64_t transposed_max_rows, int64_t packed_min_rows) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(),
              "decoder_layers: x a contiguous CPU [T, hidden] tensor");
  TORCH_CHECK(kv.dim() == 6 && kv.is_contiguous() && kv.scalar_type() == x.scalar_type(),
              "decoder_layers: kv a contiguous [L, 2, N, kvH, bs, D] cache of x's dtype");
  const int64_t L = kv.size(0);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == L * kPerLayer,
              "decoder_layers: 12 weights per layer, got ", weights.size(), " for ", L, " layers");
  check_weights(x, weights, "decoder_layers");
  check_rope_rows(x, cos, sin, kv_rows, kv.size(5), kv.size(3), "decoder_layers");
  const size_t G = block_ids.size();
  TORCH_CHECK(q_starts.size() == G && q_lens.size() == G && num_computed.size() == G &&
                  max_blocks.size() == G,
              "decoder_layers: one block_ids/q_starts/q_lens/num_computed/max_blocks per group");
  const std::vector<at::Tensor> ws(weights.begin(), weights.end());
  const std::vector<at::Tensor> bi(block_ids.begin(), block_ids.end()),
      qs(q_starts.begin(), q_starts.end()), ql(q_lens.begin(), q_lens.end()),
      nc(num_computed.begin(), num_computed.end());
  const std::vector<int64_t> mb(max_blocks.begin(), max_blocks.end());
  const LinearRows rows{gemv_max_rows, transposed_min_rows, transposed_max_rows, packed_min_rows};
  const float feps = static_cast<float>(eps);
  if (x.scalar_type() == at::kFloat) {
    run<float>(x, ws, kv, cos, sin, kv_rows, bi, qs, ql, nc, mb, num_heads, feps, scale, rows);
  } else if (x.scalar_type() == at::kBFloat16) {
    run<at::BFloat16>(x, ws, kv, cos, sin, kv_rows, bi, qs, ql, nc, mb, num_heads, feps, scale,
                      rows);
  } else {
    TORCH_CHECK(false, "decoder_layers: float32 or bfloat16 only");
  }
}

// One layer's halves around attention, for steps whose attention the Python side runs (long
// prefill chunks: SDPA, the cascade, prefix_attention): decoder_layer_in returns the rotated
// q [T, H, D] and writes K/V to the layer's cache [N, kvH, bs, D]; decoder_layer_out adds the
// o projection of attn [T, H, D] and the MLP to x in place. weights: the layer's 12 tensors.
at::Tensor decoder_layer_in(const at::Tensor& x, at::TensorList weights, at::Tensor k_cache,
                            at::Tensor v_cache, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& kv_rows, int64_t num_heads, double eps,
                            int64_t gemv_max_rows, int64_t transposed_min_rows,
                            int64_t transposed_max_rows, int64_t packed_min_rows) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(),
              "decoder_layer_in: x a contiguous CPU [T, hidden] tensor");
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == kPerLayer,
              "decoder_layer_in: 12 weights, got ", weights.size());
  check_weights(x, weights, "decoder_layer_in");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes() &&
                  k_cache.scalar_type() == x.scalar_type() &&
                  v_cache.scalar_type() == x.scalar_type(),
              "decoder_layer_in: k/v_cache contiguous [N, kvH, bs, D] of x's dtype");
  check_rope_rows(x, cos, sin, kv_rows, k_cache.size(3), k_cache.size(1), "decoder_layer_in");
  const std::vector<at::Tensor> ws(weights.begin(), weights.end());
  const LinearRows rows{gemv_max_rows, transposed_min_rows, transposed_max_rows, packed_min_rows};
  const float feps = static_cast<float>(eps);
  const int64_t D = k_cache.size(3);
  Buffers buf(x, (num_heads + 2 * k_cache.size(1)) * D, num_heads, D, 0);
  if (x.scalar_type() == at::kFloat)
    return layer_in<float>(x, ws.data(), k_cache, v_cache, cos, sin, kv_rows, num_heads, feps,
                           rows, buf);
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "decoder_layer_in: float32 or bfloat16 only");
  return layer_in<at::BFloat16>(x, ws.data(), k_cache, v_cache, cos, sin, kv_rows, num_heads,
                                feps, rows, buf);
}

void decoder_layer_out(at::Tensor x, const at::Tensor& attn, at::TensorList weights, double eps,
                       int64_t gemv_max_rows, int64_t transposed_min_rows,
                       int64_t transposed_max_rows, int64_t packed_min_rows) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(),
              "decoder_layer_out: x a contiguous CPU [T, hidden] tensor");
  TORCH_CHECK(attn.size(0) == x.size(0) && attn.scalar_type() == x.scalar_type(),
              "decoder_layer_out: attn [T, H, D] of x's dtype");
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == kPerLayer,
              "decoder_layer_out: 12 weights, got ", weights.size());
  check_weights(x, weights, "decoder_layer_out");
  const std::vector<at::Tensor> ws(weights.begin(), weights.end());
  const LinearRows rows{gemv_max_rows, transposed_min_rows, transposed_max_rows, packed_min_rows};
  const float feps = static_cast<float>(eps);
  Buffers buf(x, 0, 0, 0, weights[6].size(0) / 2);
  const at::Tensor attn_rows = attn.reshape({x.size(0), -1});
  if (x.scalar_type() == at::kFloat) {
    layer_out<float>(x, attn_rows, ws.data(), feps, rows, buf);
  } else {
    TORCH_CHECK(x.scalar_type() == at::kBFloat16, "decoder_layer_out: float32 or bfloat16 only");
    layer_out<at::BFloat16>(x, attn_rows, ws.data(), feps, rows, buf);
  }
}

}  // namespace

namespace sagellm {

// RMSNorm of each row of x [M, N] with weight w [N], as the layers apply it (one op for the
// final norm of a step: torch's rms_norm path is four ops there; final_logits.cpp calls it)
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(),
              "rms_norm: x a contiguous CPU [M, N] tensor");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == x.size(1) && w.scalar_type() == x.scalar_type() &&
                  w.is_contiguous(),
              "rms_norm: w a contiguous [N] tensor of x's dtype");
  at::Tensor out = at::empty_like(x);
  const float feps = static_cast<float>(eps);
  if (x.scalar_type() == at::kFloat) {
    ::rms_norm<float>(x.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<float>(),
                      x.size(0), x.size(1), feps);
  } else {
    TORCH_CHECK(x.scalar_type() == at::kBFloat16, "rms_norm: float32 or bfloat16 only");
    ::rms_norm<at::BFloat16>(x.data_ptr<at::BFloat16>(), w.data_ptr<at::BFloat16>(),
                             out.data_ptr<at::BFloat16>(), x.size(0), x.size(1), feps);
  }
  return out;
}

}  // namespace sagellm

TORCH_LIBRARY_FRAGMENT(sagellm, m) {
  m.def("rms_norm(Tensor x, Tensor w, float eps) -> Tensor");
  m.def(
      "decoder_layers(Tensor(a!) x, Tensor[] weights, Tensor(b!) kv, Tensor cos, Tensor sin, "
      "Tensor kv_rows, Tensor[] block_ids, Tensor[] q_starts, Tensor[] q_lens, "
      "Tensor[] num_computed, int[] max_blocks, int num_heads, float eps, float scale, "
      "int gemv_max_rows, int transposed_min_rows, int transposed_max_rows, int packed_min_rows) -> ()");
  m.def(
      "decoder_layer_in(Tensor x, Tensor[] weights, Tensor(a!) k_cache, Tensor(b!) v_cache, "
      "Tensor cos, Tensor sin, Tensor kv_rows, int num_heads, float eps, int gemv_max_rows, "
      "int transposed_min_rows, int transposed_max_rows, int packed_min_rows) -> Tensor");
  m.def(
      "decoder_layer_out(Tensor(a!) x, Tensor attn, Tensor[] weights, float eps, "
      "int gemv_max_rows, int transposed_min_rows, int transposed_max_rows, int packed_min_rows) -> ()");
}

TORCH_LIBRARY_IMPL(sagellm, CPU, m) {
  m.impl("rms_norm", &sagellm::rms_norm);
  m.impl("decoder_layers", &decoder_layers);
  m.impl("decoder_layer_in", &decoder_layer_in);
  m.impl("decoder_layer_out", &decoder_layer_out);
}

// packed weights are oneDNN tensors, whose dispatch key outranks CPU
TORCH_LIBRARY_IMPL(sagellm, MkldnnCPU, m) {
  m.impl("decoder_layers", &decoder_layers);
  m.impl("decoder_layer_in", &decoder_layer_in);
  m.impl("decoder_layer_out", &decoder_layer_out);
}
