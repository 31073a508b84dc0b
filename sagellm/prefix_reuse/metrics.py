"""PrefixReuseMetrics: hit rates, matched length, lookup latency and collisions."""

from __future__ import annotations

import threading
from dataclasses import dataclass


def _percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(frozen=True)
class PrefixReuseSnapshot:
    """A point-in-time copy of the counters (all rates in [0, 1], None when undefined)."""

    num_lookups: int
    num_requests: int
    num_hit_requests: int
    num_query_tokens: int
    num_hit_tokens: int
    num_collisions: int
    token_hit_rate: float | None
    request_hit_rate: float | None
    mean_matched_length_tokens: float | None
    lookup_p50_s: float | None
    lookup_p99_s: float | None
    collision_rate: float | None  # collisions per lookup


class PrefixReuseMetrics:
    """Thread-safe counters. ``record_request`` counts one request's reuse (token- and
    request-level hit rate); ``record_lookup_latency`` keeps the last ``max_samples``
    latencies for percentiles; ``record_collision`` counts hash matches whose tokens differed.
    """

    def __init__(self, max_samples: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._max = max_samples
        self._lat_s: list[float] = []
        self._next = 0
        self.num_lookups = 0
        self.num_requests = 0
        self.num_hit_requests = 0
        self.num_query_tokens = 0
        self.num_hit_tokens = 0
        self.num_collisions = 0

    def record_lookup_latency(self, seconds: float) -> None:
        with self._lock:
            self.num_lookups += 1
            if len(self._lat_s) < self._max:
                self._lat_s.append(seconds)
            else:  # ring buffer: the newest samples win
                self._lat_s[self._next] = seconds
                self._next = (self._next + 1) % self._max

    def record_request(self, num_tokens: int, matched_tokens: int) -> None:
        with self._lock:
            self.num_requests += 1
            self.num_query_tokens += num_tokens
            self.num_hit_tokens += matched_tokens
            self.num_hit_requests += matched_tokens > 0

    def record_collision(self) -> None:
        with self._lock:
            self.num_collisions += 1

    def snapshot(self) -> PrefixReuseSnapshot:
        with self._lock:
            lat = list(self._lat_s)
            return PrefixReuseSnapshot(
                num_lookups=self.num_lookups,
                num_requests=self.num_requests,
                num_hit_requests=self.num_hit_requests,
                num_query_tokens=self.num_query_tokens,
                num_hit_tokens=self.num_hit_tokens,
                num_collisions=self.num_collisions,
                token_hit_rate=(
                    self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else None
                ),
                request_hit_rate=(
                    self.num_hit_requests / self.num_requests if self.num_requests else None
                ),
                mean_matched_length_tokens=(
                    self.num_hit_tokens / self.num_requests if self.num_requests else None
                ),
                lookup_p50_s=_percentile(lat, 0.50),
                lookup_p99_s=_percentile(lat, 0.99),
                collision_rate=(
                    self.num_collisions / self.num_lookups if self.num_lookups else None
                ),
            )
