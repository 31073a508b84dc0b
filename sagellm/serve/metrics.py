"""Prometheus metrics of the server, vLLM's names where vLLM has one.

vLLM names: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:gpu_cache_usage_perc`` (KV blocks in use / pool, 0..1), ``vllm:prompt_tokens_total``,
``vllm:generation_tokens_total``, ``vllm:prefix_cache_queries_total`` / ``_hits_total``
(prompt tokens looked up / found cached), ``vllm:request_success_total{finished_reason}``,
histograms ``vllm:time_to_first_token_seconds``, ``vllm:time_per_output_token_seconds``,
``vllm:e2e_request_latency_seconds``.
sagellm's own (no vLLM name): ``sagellm:num_kv_blocks_used``, ``sagellm:num_kv_blocks``,
``sagellm:prefix_cache_hit_rate`` (the engine's prefix index token hit rate).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sagellm.core.types import RequestMetrics

_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
_TPOT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class ServeMetrics:
    """Updated by the engine thread (prometheus_client metrics are thread-safe)."""

    def __init__(self, model_name: str) -> None:
        self.registry = r = CollectorRegistry()
        lab = {"model_name": model_name}
        self._lab = lab

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, list(lab), registry=r).labels(**lab)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, list(lab), registry=r).labels(**lab)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, list(lab), buckets=buckets, registry=r).labels(**lab)

        self.running = gauge("vllm:num_requests_running", "Requests in the running batch.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting for admission.")
        self.kv_usage = gauge("vllm:gpu_cache_usage_perc", "KV blocks in use / pool (0..1).")
        self.kv_used = gauge("sagellm:num_kv_blocks_used", "KV blocks referenced by requests.")
        self.kv_total = gauge("sagellm:num_kv_blocks", "KV blocks in the device pool.")
        self.hit_rate = gauge("sagellm:prefix_cache_hit_rate", "Prefix index token hit rate.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens of admitted requests.")
        self.gen_tokens = counter("vllm:generation_tokens", "Generated tokens.")
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prompt tokens looked up.")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prompt tokens found cached.")
        self._success = Counter(
            "vllm:request_success",
            "Finished requests by reason (stop, length, abort, error).",
            [*lab, "finished_reason"],
            registry=r,
        )
        self.ttft = hist("vllm:time_to_first_token_seconds", "TTFT (s).", _LATENCY_BUCKETS_S)
        self.tpot = hist("vllm:time_per_output_token_seconds", "TPOT (s).", _TPOT_BUCKETS_S)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "E2E latency (s).", _LATENCY_BUCKETS_S)

    def on_added(self, num_prompt_tokens: int) -> None:
        self.prompt_tokens.inc(num_prompt_tokens)

    def on_step(self, stats: dict[str, float]) -> None:
        self.running.set(stats.get("num_running", 0.0))
        self.waiting.set(stats.get("num_waiting", 0.0))
        used, total = stats.get("num_kv_blocks_used", 0.0), stats.get("num_kv_blocks", 0.0)
        self.kv_used.set(used)
        self.kv_total.set(total)
        self.kv_usage.set(used / total if total else 0.0)
        self.hit_rate.set(stats.get("prefix_token_hit_rate", 0.0))

    def on_finished(self, m: RequestMetrics) -> None:
        """One finished request's latencies (engine clock: from add_request)."""
        self._success.labels(**self._lab, finished_reason=m.finish_reason or "unknown").inc()
        self.gen_tokens.inc(m.num_output_tokens)
        self.prefix_queries.inc(m.num_prompt_tokens)
        self.prefix_hits.inc(m.num_cached_tokens)
        if m.first_token_s is not None:
            self.ttft.observe(m.first_token_s - m.arrival_s)
        if m.finished_s is not None:
            self.e2e.observe(m.finished_s - m.arrival_s)
            if m.first_token_s is not None and m.num_output_tokens > 1:
                n = m.num_output_tokens - 1
                self.tpot.observe((m.finished_s - m.first_token_s) / n)

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)
