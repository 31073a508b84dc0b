"""Benchmarking any OpenAI-compatible server from the client side (``sagellm bench --backend
openai``): the workloads, arrival processes, repeats, warm-up, metrics and run folder of
:class:`~sagellm.benchmarks.runner.BenchmarkRunner`, with requests sent over HTTP.

Each workload request becomes one streamed ``POST {base_url}/completions`` whose ``prompt`` is
the workload's token ids (OpenAI's completions API and vLLM accept a list of ids; there is no
text fallback: a server that refuses ids fails every request with its error message), with
``max_tokens`` = the workload's output length, ``temperature: 0``, ``ignore_eos: true`` (vLLM's
extra field; a server that ignores it may stop early, which the usage count shows) and
``stream_options.include_usage``. Timing is :mod:`sagellm.benchmarks.openai_stream`'s
(``vllm bench serve``'s), on ``time.perf_counter``.

Modes: ``arrival`` sends each request at its workload arrival time; ``concurrency`` keeps at
most ``max_concurrency`` in flight. ``OpenAIEndpoint.max_concurrency`` caps in-flight requests
in either mode (a request waiting for a slot has not been sent: its TTFT starts when it is, as
in vLLM). A request that fails or exceeds ``timeout_s`` is recorded with finish reason
``"error"`` and its ``error``; the run goes on.

Client-side there are no engine steps: ``steps`` is empty, so MFU, comm share and step time
are None or 0, and ``num_cached_tokens`` is known only when the server reports
``usage.prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.metrics import SLOTargets, compute_metrics
from sagellm.benchmarks.openai_stream import StreamTimer, failed_metrics
from sagellm.benchmarks.progress import RunProgress
from sagellm.benchmarks.runner import (
    WARMUP_SEED,
    RepeatResult,
    RunResult,
    WorkloadBuilder,
    median_metrics,
)
from sagellm.benchmarks.workloads import WorkloadRequest, build_workload
from sagellm.core.errors import SageLLMError
from sagellm.core.types import RequestMetrics

DEFAULT_VOCAB_SIZE = 32_000  # build_workload draws ids below min(vocab, 32000) anyway


class EndpointError(SageLLMError, RuntimeError):
    """The server cannot be used: unreachable, refuses the key, or does not serve the model."""


@dataclass(frozen=True)
class OpenAIEndpoint:
    """Where and how to send requests. ``base_url`` ends in ``/v1``
    (``http://127.0.0.1:8000/v1``); ``model`` None = the first model ``GET /models`` lists;
    ``timeout_s`` bounds one whole request, ``connect_timeout_s`` the connection (and the
    preflight ``GET /models``)."""

    base_url: str
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = 300.0
    connect_timeout_s: float = 5.0
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"base_url must be an http(s) URL with a host, like http://127.0.0.1:8000/v1; "
                f"got {self.base_url!r}"
            )
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be None or >= 1, got {self.max_concurrency}")

    def url(self, route: str) -> str:
        return self.base_url.rstrip("/") + "/" + route.lstrip("/")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class OpenAIBenchmarkRunner:
    """``OpenAIBenchmarkRunner(endpoint).run(config)``: ``config.engine`` is not used (the
    server runs its own); results go to ``results_root/<experiment>/<run_id>/`` with
    ``env.json`` recording the backend, base URL and served model."""

    def __init__(
        self,
        endpoint: OpenAIEndpoint,
        progress: bool | None = None,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        build: WorkloadBuilder = build_workload,
    ) -> None:
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be an integer >= 1, got {vocab_size!r}")
        self.endpoint = endpoint
        self.progress = progress
        self.vocab_size = vocab_size
        self.build = build
        self.served_model: str | None = None

    def run(self, config: BenchmarkConfig, results_root: str | Path | None = "results"):
        """Run ``config`` against the endpoint; a :class:`RunResult` (``run_dir`` set when
        written). Raises :class:`EndpointError` when the server cannot be used."""
        result = asyncio.run(self._run(config))
        if results_root is not None:
            from sagellm.benchmarks.run_dir import write_run

            result.run_dir = write_run(result, Path(results_root))
        return result

    async def _run(self, config: BenchmarkConfig) -> RunResult:
        import httpx

        ep = self.endpoint
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        timeout = httpx.Timeout(ep.timeout_s, connect=ep.connect_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
            model = await self._preflight(client)
            self.served_model = model
            if config.warmup_requests:
                wl = config.workload.model_copy(update={"seed": config.workload.seed + WARMUP_SEED})
                warm = [
                    WorkloadRequest(f"warmup-{i}", 0.0, r.prompt_token_ids, min(r.max_tokens, 4))
                    for i, r in enumerate(self.build(wl, self.vocab_size)[: config.warmup_requests])
                ]
                await self._drive(client, model, warm, config, "warmup", None)
            result = RunResult(config)
            slo = SLOTargets(config.slo.ttft_s, config.slo.tpot_s)
            bar = RunProgress(config.experiment, config.repeats, self.progress)
            try:
                for rep in range(config.repeats):
                    wl = config.workload.model_copy(update={"seed": config.workload.seed + rep})
                    reqs = self.build(wl, self.vocab_size)
                    bar.start_repeat(rep, len(reqs))
                    rm = await self._drive(client, model, reqs, config, f"r{rep}", bar)
                    m = compute_metrics(
                        rm, [], slo, None, config.num_devices, config.price_per_device_hour
                    )
                    result.repeats.append(RepeatResult(rm, [], m, None))
            finally:
                bar.close()
        result.metrics = median_metrics([r.metrics for r in result.repeats])
        result.env = {
            "backend": "openai",
            "base_url": ep.base_url,
            "served_model": model,
            "max_concurrency": ep.max_concurrency,
            "timeout_s": ep.timeout_s,
            "vocab_size": self.vocab_size,
        }
        return result

    async def _preflight(self, client) -> str:
        """``GET /models`` within the connect timeout: reachable, key accepted, model served;
        returns the model name to send."""
        import httpx

        ep = self.endpoint
        url = ep.url("models")
        try:
            resp = await asyncio.wait_for(
                client.get(url, headers=ep.headers()), ep.connect_timeout_s * 2
            )
        except (httpx.HTTPError, OSError, asyncio.TimeoutError) as err:
            raise EndpointError(
                f"cannot reach {url} within {ep.connect_timeout_s:g}s "
                f"({type(err).__name__}: {err}); is the server running at {ep.base_url}?"
            ) from None
        if resp.status_code == 401:
            raise EndpointError(f"{url} answered 401: pass the server's key with --api-key")
        if resp.status_code != 200:
            raise EndpointError(f"{url} answered {resp.status_code}: {resp.text[:300]}")
        try:
            served = [m["id"] for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise EndpointError(f"{url} is not an OpenAI models list: {resp.text[:300]}") from None
        if ep.model is None:
            if not served:
                raise EndpointError(f"{url} lists no model; pass --model")
            return served[0]
        if ep.model not in served:
            raise EndpointError(
                f"model {ep.model!r} is not served at {ep.base_url}; it serves {served}"
            )
        return ep.model

    async def _drive(self, client, model: str, reqs, cfg: BenchmarkConfig, tag: str, bar):
        """Send ``reqs``; ``bar`` (a RunProgress, None for the warm-up) counts finished ones."""
        cap = self.endpoint.max_concurrency
        if cap is None and cfg.mode == "concurrency":
            cap = cfg.max_concurrency
        slots = asyncio.Semaphore(cap) if cap else None
        order = sorted(reqs, key=lambda r: r.arrival_offset_s)
        t0 = time.perf_counter()

        async def one(r: WorkloadRequest) -> RequestMetrics:
            if cfg.mode == "arrival":
                await asyncio.sleep(max(0.0, t0 + r.arrival_offset_s - time.perf_counter()))
            if slots is None:
                out = await self._request(client, model, f"{tag}-{r.request_id}", r)
            else:
                async with slots:
                    out = await self._request(client, model, f"{tag}-{r.request_id}", r)
            if bar is not None:
                bar.request_done()
            if out.error is not None:
                (bar.write if bar is not None else print)(f"{out.request_id} failed: {out.error}")
            return out

        return list(await asyncio.gather(*(one(r) for r in order)))

    async def _request(self, client, model: str, rid: str, r: WorkloadRequest) -> RequestMetrics:
        """One streamed completion; never raises (a failure is a record with ``error``)."""
        ep = self.endpoint
        body = {
            "model": model,
            "prompt": list(r.prompt_token_ids),
            "max_tokens": r.max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        sent = time.perf_counter()
        timer = StreamTimer(rid, sent, len(r.prompt_token_ids))
        try:
            await asyncio.wait_for(self._stream(client, body, timer), ep.timeout_s)
        except asyncio.TimeoutError:
            msg = f"timed out after {ep.timeout_s:g}s"
            return failed_metrics(rid, sent, len(r.prompt_token_ids), time.perf_counter(), msg)
        except _HTTPStatus as err:
            return failed_metrics(rid, sent, len(r.prompt_token_ids), time.perf_counter(), str(err))
        except Exception as err:  # any transport failure is this request's, the run goes on
            msg = f"{type(err).__name__}: {err}"
            return failed_metrics(rid, sent, len(r.prompt_token_ids), time.perf_counter(), msg)
        return timer.metrics()

    async def _stream(self, client, body: dict, timer: StreamTimer) -> None:
        ep = self.endpoint
        url = ep.url("completions")
        async with client.stream("POST", url, json=body, headers=ep.headers()) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                raise _HTTPStatus(f"HTTP {resp.status_code}: {_error_message(text)}")
            async for line in resp.aiter_lines():
                timer.feed(line, time.perf_counter())
            timer.close(time.perf_counter())


class _HTTPStatus(Exception):
    """The server answered a request with a non-200 status."""


def _error_message(text: str) -> str:
    """``error.message`` of an OpenAI-style error body, else the body's start."""
    import json

    try:
        err = json.loads(text)["error"]
        return str(err["message"] if isinstance(err, dict) else err)
    except (ValueError, KeyError, TypeError):
        return text[:300]
