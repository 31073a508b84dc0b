// parallel_for_stealing(n, fn): fn(i) once for every item i in [0, n), on torch's intra-op
// threads, with the tail of the work stolen instead of waited for.
//
// Items start as contiguous ranges, one per thread (the split at::parallel_for would make).
// Each thread runs its own range from the front, in order, so each thread still streams one
// contiguous run of memory; a thread whose range is empty then takes items from the back of
// the other ranges, one at a time, until none is left. Each range is one 64-bit atomic (front
// in the low half, back in the high half), so a claim is a compare-and-swap and no item runs
// twice or never. Items must be independent: they run in an order and on threads that vary
// from call to call, so each must write only its own outputs (then results are the same bits
// whichever thread runs an item).
//
// Why: a decode step is ~150 parallel regions of 20-100 us on SmolLM2, each ending in a barrier.
// With a fixed split, the thread that finished first waited for the other; in a W3 bf16
// profile (Zen 3 VM, 2 vCPUs) each thread spent ~8% of the decode in libgomp's barrier.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

namespace sagellm {

namespace steal_detail {

struct alignas(64) Range {  // one cache line each: a thread's claims do not bounce another's
  std::atomic<uint64_t> front_back;
};

inline uint64_t pack(uint64_t front, uint64_t back) { return front | (back << 32); }

// the front item of r (or its back item), or -1 when r is empty
inline int64_t take(Range& r, bool front) {
  uint64_t cur = r.front_back.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t f = cur & 0xffffffffu, b = cur >> 32;
    if (f >= b) return -1;
    const uint64_t next = front ? pack(f + 1, b) : pack(f, b - 1);
    if (r.front_back.compare_exchange_weak(cur, next, std::memory_order_relaxed))
      return static_cast<int64_t>(front ? f : b - 1);
  }
}

}  // namespace steal_detail

template <typename F>
void parallel_for_stealing(int64_t n, const F& fn) {
  using namespace steal_detail;
  TORCH_CHECK(n < (int64_t{1} << 32), "parallel_for_stealing: fewer than 2^32 items");
  if (n <= 0) return;
  const int64_t nt = std::min<int64_t>(at::get_num_threads(), n);
  if (nt <= 1 || at::in_parallel_region()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  const std::unique_ptr<Range[]> ranges(new Range[nt]);
  for (int64_t t = 0; t < nt; ++t)
    ranges[t].front_back.store(pack(t * n / nt, (t + 1) * n / nt), std::memory_order_relaxed);
  // one index per thread where the runtime gives nt threads; a smaller team hands a thread
  // several, which it runs in turn before stealing
  at::parallel_for(0, nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i; (i = take(ranges[t], true)) >= 0;) fn(i);
    for (int64_t k = 1; k < nt; ++k)
      for (int64_t i; (i = take(ranges[(t0 + k) % nt], false)) >= 0;) fn(i);
  });
}

}  // namespace sagellm
