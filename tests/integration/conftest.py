"""Fixtures of the serving tests: one ``sagellm serve`` subprocess on 127.0.0.1 (session
scope, started only when a test asks for it) and an in-process engine as the oracle."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVE_MODEL = "smollm2-135m-instruct"
SERVE_KEY = "test-key-123"
SERVE_NUM_KV_BLOCKS = 256
SERVE_LIMITS = {
    "--max-tokens-limit": "64",
    "--max-body-bytes": "65536",
    "--max-prompt-tokens": "256",
    "--max-concurrent-streams": "128",
}
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Server:
    base_url: str  # http://127.0.0.1:PORT
    api_key: str
    model: str
    proc: subprocess.Popen

    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key, **kw)

    def async_client(self, **kw):
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key=self.api_key, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def serve_server(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("openai")
    import httpx

    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "sagellm.cli",
        "serve",
        "--model",
        SERVE_MODEL,
        "--port",
        str(port),
        "--api-key",
        SERVE_KEY,
        "--num-kv-blocks",
        str(SERVE_NUM_KV_BLOCKS),
        "--log-level",
        "warning",
    ]
    for k, v in SERVE_LIMITS.items():
        cmd += [k, v]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SAGELLM_API_KEY", None)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sagellm serve exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"sagellm serve did not come up:\n{log.read_text()}")
        time.sleep(0.3)
    yield Server(base, SERVE_KEY, SERVE_MODEL, proc)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def serve_reference():
    """``ref(prompt, max_tokens, chat) -> token ids``: greedy, in process, same model and
    pool as the server (cached per argument tuple)."""
    from sagellm.core.config import EngineConfig, ModelConfig
    from sagellm.core.types import SamplingParams
    from sagellm.engines.native import NativeEngine

    engine = NativeEngine(
        EngineConfig(model=ModelConfig(path=SERVE_MODEL), num_kv_blocks=SERVE_NUM_KV_BLOCKS)
    )
    cache: dict[tuple, list[int]] = {}

    def ref(prompt: str, max_tokens: int, chat: bool) -> list[int]:
        key = (prompt, max_tokens, chat)
        if key not in cache:
            sp = SamplingParams(max_tokens=max_tokens)
            cache[key] = engine.generate([prompt], sp, chat=chat)[0]
        return cache[key]

    ref.engine = engine
    return ref
