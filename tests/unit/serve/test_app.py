"""The app over a scripted fake engine (no model): the concurrent-stream cap (429), a failing
engine step (clients get an error, the server serves on), /metrics behind the key."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
import httpx
import uvicorn

from sagellm.core.types import Request, RequestMetrics, RequestOutput
from sagellm.serve import ServeConfig, create_app


class FakeEngine:
    """Emits token 7 per step for each request while ``gate`` is set; ``fail_next`` makes the
    next step raise."""

    max_model_len = 128

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.fail_next = False
        self.running: dict[str, tuple[Request, RequestMetrics]] = {}
        self.pending: list[RequestOutput] = []
        self.done: list[RequestMetrics] = []

    def add_request(self, r: Request) -> None:
        self.running[r.request_id] = (r, RequestMetrics(r.request_id, time.perf_counter(), 1))

    def has_unfinished(self) -> bool:
        return bool(self.running or self.pending)

    def abort(self, rid: str) -> bool:
        if rid not in self.running:
            return False
        _, m = self.running.pop(rid)
        m.finish_reason = "abort"
        self.done.append(m)
        self.pending.append(RequestOutput(rid, [], True, "abort"))
        return True

    def step(self) -> list[RequestOutput]:
        out, self.pending = self.pending, []
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        if not self.gate.is_set():
            time.sleep(0.01)
            return out
        for rid, (r, m) in list(self.running.items()):
            m.num_output_tokens += 1
            fin = m.num_output_tokens >= r.sampling.max_tokens
            if fin:
                m.finish_reason = "length"
                self.done.append(self.running.pop(rid)[1])
            out.append(RequestOutput(rid, [7], fin, "length" if fin else None))
        return out

    def stats(self) -> dict[str, float]:
        return {"num_running": float(len(self.running)), "num_kv_blocks": 8.0}

    def request_metrics(self) -> list[RequestMetrics]:
        return self.done + [m for _, m in self.running.values()]

    def reset_metrics(self) -> None:
        self.done = []


@pytest.fixture
def served():
    engine = FakeEngine()
    cfg = ServeConfig(
        served_model_name="fake", api_key="k", metrics_require_key=True, max_concurrent_streams=2
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine, cfg), port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.02)
    yield engine, base
    server.should_exit = True
    engine.gate.set()
    t.join(10)


H = {"Authorization": "Bearer k"}
BODY = {"model": "fake", "prompt": [1, 2, 3], "max_tokens": 3}


def test_streams_over_the_cap_get_429_and_later_ones_run(served):
    engine, base = served
    results: list[httpx.Response] = []

    def call():
        results.append(httpx.post(base + "/v1/completions", json=BODY, headers=H, timeout=30))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    while len(engine.running) < 2:
        time.sleep(0.01)
    r = httpx.post(base + "/v1/completions", json=BODY, headers=H, timeout=30)
    assert r.status_code == 429
    assert "max-concurrent-streams" in r.json()["error"]["message"]
    engine.gate.set()
    for t in threads:
        t.join(30)
    assert [x.status_code for x in results] == [200, 200]
    r = httpx.post(base + "/v1/completions", json=BODY, headers=H, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_a_failing_step_errors_its_requests_and_the_server_serves_on(served):
    engine, base = served
    engine.fail_next = True
    engine.gate.set()
    r = httpx.post(base + "/v1/completions", json=BODY, headers=H, timeout=30)
    assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
    r = httpx.post(base + "/v1/completions", json=BODY, headers=H, timeout=30)
    assert r.status_code == 200


def test_metrics_can_require_the_key(served):
    _, base = served
    assert httpx.get(base + "/metrics").status_code == 401
    assert httpx.get(base + "/metrics", headers=H).status_code == 200
    assert httpx.get(base + "/health").status_code == 200
