"""BenchmarkRunner against a fake engine: rejected requests are counted, vocab comes from the
engine (no fallback), a custom workload builder shapes every draw."""

import time
from types import SimpleNamespace

import pytest

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.runner import BenchmarkRunner, engine_vocab_size
from sagellm.benchmarks.workloads import LengthDist, WorkloadConfig, build_workload
from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import RequestMetrics, RequestOutput, StepMetrics


class FakeEngine:
    """Finishes every queued request with one token per step; refuses prompts longer than
    ``max_prompt_tokens``. ``arch``/``tokenizer`` carry a vocab size only when given."""

    def __init__(self, max_prompt_tokens=1_000, arch=None, tokenizer=None):
        self.max_prompt_tokens = max_prompt_tokens
        if arch is not None:
            self.arch = arch
        if tokenizer is not None:
            self.tokenizer = tokenizer
        self.prompts: list[list[int]] = []
        self.reset_metrics()

    def clock(self):
        return time.perf_counter()

    def reset_metrics(self):
        self._metrics, self._steps, self._queue = {}, [], []

    def add_request(self, req):
        if len(req.prompt_token_ids) > self.max_prompt_tokens:
            raise InvalidRequestError(f"request {req.request_id!r}: prompt too long")
        self.prompts.append(list(req.prompt_token_ids))
        self._metrics[req.request_id] = RequestMetrics(
            req.request_id, req.arrival_s, len(req.prompt_token_ids)
        )
        self._queue.append(req.request_id)

    def has_unfinished(self):
        return bool(self._queue)

    def step(self):
        now, outs = self.clock(), []
        for rid in self._queue:
            m = self._metrics[rid]
            m.scheduled_s = m.first_token_s = m.finished_s = now
            m.token_times_s, m.num_output_tokens, m.finish_reason = [now], 1, "length"
            outs.append(RequestOutput(rid, [1], True, "length"))
        self._steps.append(StepMetrics(len(self._steps), now, len(outs), 1, 1, 0, 0.0, 1e-3, 0.0))
        self._queue = []
        return outs

    def request_metrics(self):
        return list(self._metrics.values())

    def step_metrics(self):
        return list(self._steps)


def config(num_requests=6, prompt=None, ttft_s=None):
    prompt = prompt or LengthDist(dist="fixed", mean=8)
    return BenchmarkConfig(
        workload=WorkloadConfig(
            num_requests=num_requests, prompt_tokens=prompt, output_tokens=LengthDist(mean=1)
        ),
        mode="concurrency",
        max_concurrency=2,
        warmup_requests=0,
        slo={"ttft_s": ttft_s},
    )


def test_rejected_requests_count_as_requests_and_never_as_good():
    # prompts of 4..12 tokens; the engine refuses those over 8
    cfg = config(8, LengthDist(dist="uniform", min=4, max=12), ttft_s=60.0)
    eng = FakeEngine(max_prompt_tokens=8, arch=SimpleNamespace(vocab_size=100))
    res = BenchmarkRunner(eng, progress=False).run(cfg, None, peak_flops_per_s=1e9)
    reqs = res.repeats[0].requests
    num_rejected = sum(r.finish_reason == "rejected" for r in reqs)
    assert 0 < num_rejected < 8 and len(reqs) == 8
    m = res.metrics
    assert m["num_requests"] == 8 and m["num_rejected_requests"] == num_rejected
    assert m["num_completed"] == 8 - num_rejected
    # every served request meets the 60 s TTFT objective; the rejected ones are not good
    assert m["slo_attainment"] == pytest.approx((8 - num_rejected) / 8)
    assert m["goodput_req_per_s"] == pytest.approx(m["request_throughput_per_s"])


def test_vocab_comes_from_the_engine_and_unknown_is_an_error():
    with pytest.raises(ValueError, match="cannot tell the vocabulary size of FakeEngine"):
        engine_vocab_size(FakeEngine())
    with pytest.raises(ValueError, match="vocabulary size"):
        BenchmarkRunner(FakeEngine(), progress=False).run(config(), None, peak_flops_per_s=1e9)
    eng = FakeEngine(tokenizer=SimpleNamespace(vocab_size=20))
    BenchmarkRunner(eng, progress=False).run(config(), None, peak_flops_per_s=1e9)
    assert max(max(p) for p in eng.prompts) < 20
    eng = FakeEngine(arch=SimpleNamespace(vocab_size=12), tokenizer=SimpleNamespace(vocab_size=99))
    assert engine_vocab_size(eng) == 12
    BenchmarkRunner(eng, progress=False, vocab_size=5).run(config(), None, peak_flops_per_s=1e9)
    assert max(max(p) for p in eng.prompts) < 5
    with pytest.raises(ValueError, match="vocab_size must be"):
        BenchmarkRunner(eng, vocab_size=0)


def test_a_custom_build_shapes_every_drawn_workload():
    def with_marker(wl, vocab):
        return [
            type(r)(r.request_id, r.arrival_offset_s, [7, 7, *r.prompt_token_ids], r.max_tokens)
            for r in build_workload(wl, vocab)
        ]

    eng = FakeEngine(arch=SimpleNamespace(vocab_size=50))
    cfg = config(3).model_copy(update={"warmup_requests": 1})
    BenchmarkRunner(eng, progress=False, build=with_marker).run(cfg, None, peak_flops_per_s=1e9)
    assert len(eng.prompts) == 1 + 3 and all(p[:2] == [7, 7] for p in eng.prompts)
