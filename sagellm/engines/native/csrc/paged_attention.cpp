// Paged attention on CPU that reads K/V blocks in place (no gather into a padded workspace).
//
// Registered as torch.ops.sagellm.paged_attention(q, k_cache, v_cache, block_ids, q_starts,
// q_lens, num_computed, max_blocks, scale, out). Shapes (all contiguous):
//   q, out         [T, H, D]        float32 or bfloat16 (same dtype as the cache)
//   k/v_cache      [N, kvH, bs, D]  one layer of the paged cache
//   block_ids      [B * max_blocks] int64, sequence b's table at b * max_blocks
//   q_starts/lens  [B] int64        sequence b's queries are rows q_starts[b] .. + q_lens[b]
//   num_computed   [B] int64        tokens of b before its first query
// Query i of sequence b sits at position num_computed[b] + i and attends to keys 0 .. that
// position (causal). Every (sequence, kv head) pair is one task; its G = H / kvH query heads
// share each K/V row read. Scores, softmax and the P.V sum are fp32; the output is cast once.
// Head sizes 16/32/64/128 with at most 16 query heads per kv head take a one-pass vector loop:
// attention_avx512.h on AVX-512 CPUs, attention_avx2.h on AVX2 ones; SAGELLM_ATTENTION_PORTABLE=1
// forces the portable two-pass loop below (the tests compare both).
#include "ops.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include "attention_avx512.h"
#define SAGELLM_ATTENTION_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include "attention_avx2.h"
#define SAGELLM_ATTENTION_AVX2 1
#endif

namespace {

template <typename T>
inline float dot_row(const float* q, const T* k, int64_t d) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < d; ++j) s += q[j] * static_cast<float>(k[j]);
  return s;
}

template <typename T>
inline void axpy_row(float p, const T* v, float* acc, int64_t d) {
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) acc[j] += p * static_cast<float>(v[j]);
}

// The shapes and raw pointers both loops read (see the header comment for the layouts).
template <typename T>
struct Args {
  int64_t H, D, kvH, bs, G, B, max_blocks;
  float scale;
  const T* q;
  const T* k;
  const T* v;
  T* out;
  const int64_t* block_ids;
  const int64_t* q_starts;
  const int64_t* q_lens;
  const int64_t* num_computed;

  Args(const at::Tensor& q_, const at::Tensor& kc, const at::Tensor& vc, const at::Tensor& bt,
       const at::Tensor& qs, const at::Tensor& ql, const at::Tensor& nc, int64_t max_blocks_,
       double scale_, at::Tensor& out_)
      : H(q_.size(1)),
        D(q_.size(2)),
        kvH(kc.size(1)),
        bs(kc.size(2)),
        G(q_.size(1) / kc.size(1)),
        B(qs.size(0)),
        max_blocks(max_blocks_),
        scale(static_cast<float>(scale_)),
        q(q_.data_ptr<T>()),
        k(kc.data_ptr<T>()),
        v(vc.data_ptr<T>()),
        out(out_.data_ptr<T>()),
        block_ids(bt.data_ptr<int64_t>()),
        q_starts(qs.data_ptr<int64_t>()),
        q_lens(ql.data_ptr<int64_t>()),
        num_computed(nc.data_ptr<int64_t>()) {}
};

template <typename T>
void run(const Args<T>& a) {
  const int64_t H = a.H, D = a.D, kvH = a.kvH, bs = a.bs, G = a.G, B = a.B;
  const int64_t max_blocks = a.max_blocks;
  const float fscale = a.scale;
  const T *qp = a.q, *kp = a.k, *vp = a.v;
  T* op = a.out;
  const int64_t *bt = a.block_ids, *qs = a.q_starts, *ql = a.q_lens, *nc = a.num_computed;
  at::parallel_for(0, B * kvH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(G * D), acc(G * D), scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / kvH, h = task % kvH;
      for (int64_t i = 0; i < ql[b]; ++i) {
        const int64_t row = qs[b] + i;
        const int64_t num_keys = nc[b] + i + 1;
        for (int64_t g = 0; g < G; ++g) {
          const T* src = qp + (row * H + h * G + g) * D;
          for (int64_t j = 0; j < D; ++j) qf[g * D + j] = static_cast<float>(src[j]) * fscale;
        }
        scores.resize(G * num_keys);
        // pass 1: scores of every key, block by block (rows of a block are contiguous)
        for (int64_t t0 = 0, blk_i = 0; t0 < num_keys; t0 += bs, ++blk_i) {
          const int64_t blk = bt[b * max_blocks + blk_i];
          const int64_t n = std::min(bs, num_keys - t0);
          const T* krow = kp + ((blk * kvH + h) * bs) * D;
          for (int64_t s = 0; s < n; ++s) {
            for (int64_t g = 0; g < G; ++g) {
              scores[g * num_keys + t0 + s] = dot_row(qf.data() + g * D, krow + s * D, D);
            }
          }
        }
        // softmax per query head, fp32
        for (int64_t g = 0; g < G; ++g) {
          float* sg = scores.data() + g * num_keys;
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t t = 0; t < num_keys; ++t) m = std::max(m, sg[t]);
          float sum = 0.f;
          for (int64_t t = 0; t < num_keys; ++t) {
            sg[t] = std::exp(sg[t] - m);
            sum += sg[t];
          }
          const float inv = 1.f / sum;
          for (int64_t t = 0; t < num_keys; ++t) sg[t] *= inv;
        }
        // pass 2: P.V
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t t0 = 0, blk_i = 0; t0 < num_keys; t0 += bs, ++blk_i) {
          const int64_t blk = bt[b * max_blocks + blk_i];
          const int64_t n = std::min(bs, num_keys - t0);
          const T* vrow = vp + ((blk * kvH + h) * bs) * D;
          for (int64_t s = 0; s < n; ++s) {
            for (int64_t g = 0; g < G; ++g) {
              axpy_row(scores[g * num_keys + t0 + s], vrow + s * D, acc.data() + g * D, D);
            }
          }
        }
        for (int64_t g = 0; g < G; ++g) {
          T* dst = op + (row * H + h * G + g) * D;
          for (int64_t j = 0; j < D; ++j) dst[j] = static_cast<T>(acc[g * D + j]);
        }
      }
    }
  });
}

#if defined(SAGELLM_ATTENTION_AVX512) || defined(SAGELLM_ATTENTION_AVX2)
// Asks for `bytes` from p into L2 (prefetcht1, one request per 64-byte line), without waiting.
inline void prefetch_l2(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 2);
}

// Whether two neighbouring sequences of the group begin with the same block (a shared prefix).
template <typename T>
bool shares_first_block(const Args<T>& a) {
  for (int64_t b = 1; b < a.B; ++b)
    if (a.block_ids[b * a.max_blocks] == a.block_ids[(b - 1) * a.max_blocks]) return true;
  return false;
}

// The vector loops' driver: attend(qf, q, num_keys, rows, acc, out) runs one query row of one kv
// head's G query heads (qf: their [G, D] fp32 rows times scale; q: the same rows as given,
// unscaled; rows(i, &k, &v): the first K and V rows of that kv head in the sequence's i-th
// block).
//
// rows(i) of a task's first query row also asks for block i + 1's K and V rows into L2, and at
// its last block for the first block of the thread's next task: a block is one 4-8 KiB piece
// of the pool (bs x D values per kv head) at an unrelated address, where the hardware
// prefetcher loses the stream, so without it every block starts with a string of DRAM misses
// (the loop waited on them: 10.7 GB/s of K/V on a 64-sequence decode). Later rows of the task
// (prefill) find the blocks in cache already, and so does a block the thread's previous task
// (the previous sequence, same kv head) had at the same place in its table: a shared prefix,
// which stays in L2 without the extra requests.
//
// Task order: with a shared prefix, head-major (a thread runs one kv head for many sequences,
// so the blocks they share stay in its L2 across tasks); otherwise sequence-major, so a
// thread's consecutive tasks read the kv heads of one block side by side (kvH x bs x D values
// in a row) instead of one head's slice of every block: bf16 decode of 64 sequences x 320 keys
// over 30 layer caches took 8-13% less time, fp32 the same; with a 1024-token shared prefix
// sequence-major took 15-29% more.
template <typename T, typename Attend>
void for_each_row(const Args<T>& a, const Attend& attend) {
  const int64_t D = a.D, G = a.G, B = a.B, bs = a.bs;
  const bool seq_major = !shares_first_block(a);
  // task -> (kv head, sequence) in the chosen order
  const auto head_seq = [&](int64_t task) {
    return seq_major ? std::pair<int64_t, int64_t>{task % a.kvH, task / a.kvH}
                     : std::pair<int64_t, int64_t>{task / B, task % B};
  };
  at::parallel_for(0, B * a.kvH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(G * D), acc(G * D);
    for (int64_t task = begin; task < end; ++task) {
      const std::pair<int64_t, int64_t> hb = head_seq(task);
      const int64_t h = hb.first, b = hb.second;  // plain names: lambdas below capture them
      const int64_t* table = a.block_ids + b * a.max_blocks;
      // the previous sequence's table when this thread just ran it (a stale entry past its end
      // only costs a skipped prefetch)
      const int64_t* prev_table =
          !seq_major && task > begin && b > 0 ? table - a.max_blocks : nullptr;
      int64_t prefetch_keys = 0;  // keys of the row being run while it prefetches, else 0
      // the last block of a task's first row asks for the thread's next task's first block:
      // a task otherwise starts on a string of DRAM misses (W1-shaped decode: -7% time)
      auto prefetch_first_block = [&](int64_t next_task) {
        const std::pair<int64_t, int64_t> hb2 = head_seq(next_task);
        const int64_t h2 = hb2.first, b2 = hb2.second;
        const int64_t keys = std::min(bs, a.num_computed[b2] + 1);
        const int64_t first = ((a.block_ids[b2 * a.max_blocks] * a.kvH + h2) * bs) * D;
        prefetch_l2(a.k + first, keys * D * static_cast<int64_t>(sizeof(T)));
        prefetch_l2(a.v + first, keys * D * static_cast<int64_t>(sizeof(T)));
      };
      auto rows = [&](int64_t blk_i, const T** k, const T** v) {
        const int64_t off = ((table[blk_i] * a.kvH + h) * bs) * D;
        *k = a.k + off;
        *v = a.v + off;
        const int64_t next_keys = std::min(bs, prefetch_keys - (blk_i + 1) * bs);
        if (next_keys <= 0) {  // no next block (or not this row's to prefetch)
          if (prefetch_keys && next_keys > -bs && task + 1 < end) prefetch_first_block(task + 1);
          return;
        }
        const int64_t next_blk = table[blk_i + 1];
        if (prev_table == nullptr || prev_table[blk_i + 1] != next_blk) {
          const int64_t next = ((next_blk * a.kvH + h) * bs) * D;
          prefetch_l2(a.k + next, next_keys * D * static_cast<int64_t>(sizeof(T)));
          prefetch_l2(a.v + next, next_keys * D * static_cast<int64_t>(sizeof(T)));
        }
      };
      for (int64_t i = 0; i < a.q_lens[b]; ++i) {
        const int64_t first = ((a.q_starts[b] + i) * a.H + h * G) * D;  // of the G query heads
        const int64_t num_keys = a.num_computed[b] + i + 1;
        prefetch_keys = i == 0 ? num_keys : 0;
        for (int64_t j = 0; j < G * D; ++j) qf[j] = static_cast<float>(a.q[first + j]) * a.scale;
        attend(qf.data(), a.q + first, num_keys, rows, acc.data(), a.out + first);
      }
    }
  });
}
#endif

#ifdef SAGELLM_ATTENTION_AVX512
namespace vec = sagellm_avx512;
constexpr int64_t kVecLanes = 16;

template <typename T, int DV>
void run_vec(const Args<T>& a) {
  for_each_row(a, [&](const float* qf, const T* q, int64_t num_keys, auto rows, float* acc,
                      T* out) {
#if defined(__AVX512BF16__)
    if constexpr (std::is_same_v<T, at::BFloat16> && DV % 2 == 0 && DV <= 8) {
      vec::attend_row_bf16<DV / 2>(q, a.scale, a.G, num_keys, a.bs, rows, acc, out);
      return;
    }
#endif
    vec::attend_row<DV, T>(qf, a.G, num_keys, a.bs, rows, acc, out);
  });
}
#elif defined(SAGELLM_ATTENTION_AVX2)
namespace vec = sagellm_avx2;
constexpr int64_t kVecLanes = 8;

template <typename T, int DV>
void run_vec(const Args<T>& a) {
  for_each_row(a, [&](const float* qf, const T*, int64_t num_keys, auto rows, float* acc, T* out) {
    vec::attend_row<DV, T>(qf, a.G, num_keys, a.bs, rows, acc, out);
  });
}
#endif

// The vector loop (AVX-512, else AVX2) when it serves this head size and group (returns false
// otherwise): head sizes 16, 32, 64, 128, at most vec::kMaxGroup query heads per kv head.
template <typename T>
bool run_fast(const Args<T>& a) {
#if defined(SAGELLM_ATTENTION_AVX512) || defined(SAGELLM_ATTENTION_AVX2)
  if (a.G > vec::kMaxGroup) return false;
  switch (a.D) {
    case 16:
      run_vec<T, 16 / kVecLanes>(a);
      return true;
    case 32:
      run_vec<T, 32 / kVecLanes>(a);
      return true;
    case 64:
      run_vec<T, 64 / kVecLanes>(a);
      return true;
    case 128:
      run_vec<T, 128 / kVecLanes>(a);
      return true;
    default:
      return false;
  }
#else
  return false;
#endif
}

template <typename T>
void dispatch(const Args<T>& a) {
  if (std::getenv("SAGELLM_ATTENTION_PORTABLE") == nullptr && run_fast(a)) return;
  run(a);
}

}  // namespace

namespace sagellm {

void paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                     const at::Tensor& block_ids, const at::Tensor& q_starts,
                     const at::Tensor& q_lens, const at::Tensor& num_computed,
                     int64_t max_blocks, double scale, at::Tensor out) {
  TORCH_CHECK(q.device().is_cpu(), "paged_attention: CPU tensors only");
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(),
              "paged_attention: q [T,H,D], caches [N,kvH,bs,D]");
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  out.is_contiguous(),
              "paged_attention: contiguous tensors only");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && out.scalar_type() == q.scalar_type(),
              "paged_attention: q, cache and out must share a dtype");
  TORCH_CHECK(q.size(2) == k_cache.size(3) && q.size(1) % k_cache.size(1) == 0,
              "paged_attention: head_dim mismatch or H not a multiple of kvH");
  TORCH_CHECK(block_ids.scalar_type() == at::kLong && q_starts.scalar_type() == at::kLong &&
                  q_lens.scalar_type() == at::kLong && num_computed.scalar_type() == at::kLong,
              "paged_attention: int64 index tensors");
  if (q.scalar_type() == at::kFloat) {
    dispatch(Args<float>(q, k_cache, v_cache, block_ids, q_starts, q_lens, num_computed,
                         max_blocks, scale, out));
  } else if (q.scalar_type() == at::kBFloat16) {
    dispatch(Args<at::BFloat16>(q, k_cache, v_cache, block_ids, q_starts, q_lens, num_computed,
                                max_blocks, scale, out));
  } else {
    TORCH_CHECK(false, "paged_attention: float32 or bfloat16 only");
  }
}

}  // namespace sagellm

TORCH_LIBRARY(sagellm, m) {
  m.def(
      "paged_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_ids, "
      "Tensor q_starts, Tensor q_lens, Tensor num_computed, int max_blocks, float scale, "
      "Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(sagellm, CPU, m) { m.impl("paged_attention", &sagellm::paged_attention); }
