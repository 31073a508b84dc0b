// Shared-memory collective primitives for sagellm.comm_backend.shm (built by shm_ext.py).
//
// Flags are int64 words in a shared segment; a writer publishes with a release store after its
// data, a reader spins with acquire loads, so data written before a flag is visible after it.
// Reductions accumulate in fp32 in rank order 0..n-1, so every rank computes bitwise the same
// sum whichever rank does the work.
#include <torch/extension.h>
#include <sched.h>
#include <time.h>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#define SAGELLM_PAUSE() _mm_pause()
#else
#define SAGELLM_PAUSE() do {} while (0)
#endif

static void store_release(torch::Tensor flags, int64_t index, int64_t value) {
  auto* p = flags.data_ptr<int64_t>() + index;
  __atomic_store_n(p, value, __ATOMIC_RELEASE);
}

static int64_t load_acquire(torch::Tensor flags, int64_t index) {
  return __atomic_load_n(flags.data_ptr<int64_t>() + index, __ATOMIC_ACQUIRE);
}

static const auto kYieldPhase = std::chrono::microseconds(200);

// Spin until base[i] >= target for every i in indices, at most slice_s seconds (the caller
// holds no GIL). Returns -1 when all arrived, else the first index still behind. Spins ~1k
// pauses, then yields the core for 200 us (a peer on the same core runs at once), then sleeps
// 20 us per check: ranks may outnumber cores, and a waiter that keeps spinning takes the core
// the late rank needs.
static int64_t wait_geq_nogil(const int64_t* base, const std::vector<int64_t>& indices,
                              int64_t target, double slice_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(slice_s);
  uint64_t spins = 0;
  auto yield_until = deadline;
  for (;;) {
    int64_t behind = -1;
    for (int64_t i : indices) {
      if (__atomic_load_n(base + i, __ATOMIC_ACQUIRE) < target) { behind = i; break; }
    }
    if (behind < 0) return -1;
    ++spins;
    if (spins < 1024) {
      SAGELLM_PAUSE();
      continue;
    }
    if (spins == 1024) yield_until = std::chrono::steady_clock::now() + kYieldPhase;
    if (std::chrono::steady_clock::now() < yield_until) {
      sched_yield();
    } else {
      struct timespec ts = {0, 20000};
      nanosleep(&ts, nullptr);
    }
    if ((spins & 15) == 0 && std::chrono::steady_clock::now() > deadline) return behind;
  }
}

static int64_t wait_geq(torch::Tensor flags, std::vector<int64_t> indices, int64_t target,
                        double slice_s) {
  const int64_t* base = flags.data_ptr<int64_t>();
  py::gil_scoped_release nogil;
  return wait_geq_nogil(base, indices, target, slice_s);
}

template <typename T>
static void reduce_impl(T* out, const std::vector<const T*>& srcs, int64_t n) {
  // Sums in rank order (((s0 + s1) + s2) + ...) in fp32, whichever branch runs, so every rank
  // gets the same bits. out may be one of the sources: element i is read before it is written,
  // and no element depends on another (omp simd: no loop-carried dependence).
  const size_t k = srcs.size();
  if (k == 2) {
    const T* a = srcs[0];
    const T* b = srcs[1];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      out[i] = static_cast<T>(static_cast<float>(a[i]) + static_cast<float>(b[i]));
    return;
  }
  if (k == 3) {
    const T* a = srcs[0];
    const T* b = srcs[1];
    const T* c = srcs[2];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      out[i] = static_cast<T>(static_cast<float>(a[i]) + static_cast<float>(b[i]) +
                              static_cast<float>(c[i]));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    float acc = static_cast<float>(srcs[0][i]);
    for (size_t j = 1; j < k; ++j) acc += static_cast<float>(srcs[j][i]);
    out[i] = static_cast<T>(acc);
  }
}

// out[i] = srcs[0][i] + srcs[1][i] + ... (fp32 accumulate, rank order); out may alias a src.
static void reduce_into(torch::Tensor out, std::vector<torch::Tensor> srcs) {
  TORCH_CHECK(!srcs.empty(), "reduce_into needs at least one source");
  const int64_t n = out.numel();
  for (auto& s : srcs) {
    TORCH_CHECK(s.numel() == n && s.scalar_type() == out.scalar_type() && s.is_contiguous(),
                "reduce_into: sources must match out in size, dtype and be contiguous");
  }
  py::gil_scoped_release nogil;
  if (out.scalar_type() == torch::kFloat32) {
    std::vector<const float*> p;
    for (auto& s : srcs) p.push_back(s.data_ptr<float>());
    reduce_impl<float>(out.data_ptr<float>(), p, n);
  } else if (out.scalar_type() == torch::kBFloat16) {
    std::vector<const c10::BFloat16*> p;
    for (auto& s : srcs) p.push_back(s.data_ptr<c10::BFloat16>());
    reduce_impl<c10::BFloat16>(out.data_ptr<c10::BFloat16>(), p, n);
  } else {
    TORCH_CHECK(false, "reduce_into supports float32 and bfloat16");
  }
}

// Byte copy without the GIL (the shm slots are plain memory).
static void copy_bytes(torch::Tensor dst, torch::Tensor src) {
  TORCH_CHECK(dst.nbytes() == src.nbytes(), "copy_bytes: sizes differ");
  void* d = dst.data_ptr();
  const void* s = src.data_ptr();
  size_t n = dst.nbytes();
  py::gil_scoped_release nogil;
  std::memcpy(d, s, n);
}

// One all-reduce of `chunk` (contiguous, fp32 or bf16, at most slot_bytes) through the data
// slots at raw + slots_off (slot r at r * slot_bytes), in three stages separated by waits on the
// rank flags (word offsets kReady/kReduced/kDone of each rank's 16-word block):
//   0: wait DONE[r] >= seq-1; copy chunk into slot[me]; READY[me] = seq
//   1: wait READY[r] >= seq; reduce my 1/W share over all slots into slot[me]; REDUCED[me] = seq
//   2: wait REDUCED[r] >= seq; copy every share into chunk; DONE[me] = seq
// Starts at `stage`; returns -1 when done, or stage * 2^32 + (the flag index still behind) when
// a wait ran out of slice_s, so the caller can check that peer's liveness and resume there.
constexpr int64_t kFlagWords = 16, kReady = 0, kReduced = 1, kDone = 2;

// Flag index of `word` for every rank but `me`.
static std::vector<int64_t> peer_flags(int64_t world, int64_t me, int64_t word) {
  std::vector<int64_t> idx;
  for (int64_t r = 0; r < world; ++r)
    if (r != me) idx.push_back(r * kFlagWords + word);
  return idx;
}

static void publish_flag(int64_t* flags, int64_t me, int64_t word, int64_t seq) {
  __atomic_store_n(flags + me * kFlagWords + word, seq, __ATOMIC_RELEASE);
}

static int64_t all_reduce_chunk(torch::Tensor raw, torch::Tensor rank_flags, int64_t slots_off,
                                int64_t slot_bytes, torch::Tensor chunk, int64_t world,
                                int64_t me, int64_t seq, int64_t stage, double slice_s) {
  TORCH_CHECK(chunk.is_contiguous() && chunk.nbytes() <= static_cast<size_t>(slot_bytes),
              "all_reduce_chunk: chunk must be contiguous and fit a slot");
  const bool bf16 = chunk.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(bf16 || chunk.scalar_type() == torch::kFloat32,
              "all_reduce_chunk supports float32 and bfloat16");
  uint8_t* slots = raw.data_ptr<uint8_t>() + slots_off;
  int64_t* flags = rank_flags.data_ptr<int64_t>();
  uint8_t* data = static_cast<uint8_t*>(chunk.data_ptr());
  const int64_t n = chunk.numel(), esize = chunk.element_size();
  const std::vector<int64_t> idx[3] = {peer_flags(world, me, kDone), peer_flags(world, me, kReady),
                                       peer_flags(world, me, kReduced)};
  auto publish = [&](int64_t word) { publish_flag(flags, me, word, seq); };
  py::gil_scoped_release nogil;
  if (stage <= 0) {
    int64_t behind = wait_geq_nogil(flags, idx[0], seq - 1, slice_s);
    if (behind >= 0) return (int64_t(0) << 32) | behind;
    std::memcpy(slots + me * slot_bytes, data, n * esize);
    publish(kReady);
  }
  if (stage <= 1) {
    int64_t behind = wait_geq_nogil(flags, idx[1], seq, slice_s);
    if (behind >= 0) return (int64_t(1) << 32) | behind;
    const int64_t lo = n * me / world, hi = n * (me + 1) / world;
    if (hi > lo) {
      if (bf16) {
        std::vector<const c10::BFloat16*> p;
        for (int64_t r = 0; r < world; ++r)
          p.push_back(reinterpret_cast<const c10::BFloat16*>(slots + r * slot_bytes) + lo);
        reduce_impl<c10::BFloat16>(
            reinterpret_cast<c10::BFloat16*>(slots + me * slot_bytes) + lo, p, hi - lo);
      } else {
        std::vector<const float*> p;
        for (int64_t r = 0; r < world; ++r)
          p.push_back(reinterpret_cast<const float*>(slots + r * slot_bytes) + lo);
        reduce_impl<float>(reinterpret_cast<float*>(slots + me * slot_bytes) + lo, p, hi - lo);
      }
    }
    publish(kReduced);
  }
  int64_t behind = wait_geq_nogil(flags, idx[2], seq, slice_s);
  if (behind >= 0) return (int64_t(2) << 32) | behind;
  for (int64_t r = 0; r < world; ++r) {
    const int64_t lo = n * r / world, hi = n * (r + 1) / world;
    if (hi > lo) std::memcpy(data + lo * esize, slots + r * slot_bytes + lo * esize, (hi - lo) * esize);
  }
  publish(kDone);
  return -1;
}

// One all-gather step: `chunk` (at most slot_bytes) goes to out[r] for every rank r, where
// `out` is [world, n] and this step fills columns start .. start + chunk.numel(). Stages:
//   0: wait DONE[r] >= seq-1; copy chunk into slot[me]; READY[me] = seq
//   1: wait READY[r] >= seq; copy every slot into its row of out; REDUCED[me] = DONE[me] = seq
// Returns like all_reduce_chunk.
static int64_t all_gather_chunk(torch::Tensor raw, torch::Tensor rank_flags, int64_t slots_off,
                                int64_t slot_bytes, torch::Tensor chunk, torch::Tensor out,
                                int64_t start, int64_t world, int64_t me, int64_t seq,
                                int64_t stage, double slice_s) {
  TORCH_CHECK(chunk.is_contiguous() && out.is_contiguous() &&
                  chunk.nbytes() <= static_cast<size_t>(slot_bytes) &&
                  out.scalar_type() == chunk.scalar_type() && out.dim() == 2 &&
                  out.size(0) == world && start + chunk.numel() <= out.size(1),
              "all_gather_chunk: chunk must fit a slot and out [world, n] its columns");
  uint8_t* slots = raw.data_ptr<uint8_t>() + slots_off;
  int64_t* flags = rank_flags.data_ptr<int64_t>();
  const int64_t esize = chunk.element_size(), nbytes = chunk.numel() * esize;
  const int64_t row_bytes = out.size(1) * esize;
  uint8_t* dst = static_cast<uint8_t*>(out.data_ptr()) + start * esize;
  const uint8_t* src = static_cast<const uint8_t*>(chunk.data_ptr());
  const std::vector<int64_t> idx[2] = {peer_flags(world, me, kDone), peer_flags(world, me, kReady)};
  auto publish = [&](int64_t word) { publish_flag(flags, me, word, seq); };
  py::gil_scoped_release nogil;
  if (stage <= 0) {
    int64_t behind = wait_geq_nogil(flags, idx[0], seq - 1, slice_s);
    if (behind >= 0) return (int64_t(0) << 32) | behind;
    std::memcpy(slots + me * slot_bytes, src, nbytes);
    publish(kReady);
  }
  int64_t behind = wait_geq_nogil(flags, idx[1], seq, slice_s);
  if (behind >= 0) return (int64_t(1) << 32) | behind;
  for (int64_t r = 0; r < world; ++r) std::memcpy(dst + r * row_bytes, slots + r * slot_bytes, nbytes);
  publish(kReduced);
  publish(kDone);
  return -1;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("store_release", &store_release);
  m.def("load_acquire", &load_acquire);
  m.def("wait_geq", &wait_geq);
  m.def("reduce_into", &reduce_into);
  m.def("copy_bytes", &copy_bytes);
  m.def("all_reduce_chunk", &all_reduce_chunk);
  m.def("all_gather_chunk", &all_gather_chunk);
}
