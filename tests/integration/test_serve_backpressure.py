"""More concurrent requests than the KV pool holds: they wait in the engine's queue and all
finish with the in-process engine's greedy tokens (a tiny random checkpoint, token-id
prompts, the app under uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")


@pytest.fixture
def tiny_server(tiny_checkpoint):
    import uvicorn

    from sagellm.core.config import EngineConfig, ModelConfig
    from sagellm.engines.native import NativeEngine
    from sagellm.serve import ServeConfig, create_app

    _, folder = tiny_checkpoint("llama")

    def engine():
        return NativeEngine(EngineConfig(model=ModelConfig(path=str(folder)), num_kv_blocks=4))

    cfg = ServeConfig(served_model_name="tiny", max_tokens_limit=16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = engine()
    server = uvicorn.Server(uvicorn.Config(create_app(served, cfg), port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", engine(), served
    server.should_exit = True
    t.join(10)


def test_requests_beyond_the_kv_pool_wait_and_all_finish_exactly(tiny_server):
    import openai

    base, reference, served = tiny_server
    prompts = [[(7 * i + j) % 250 + 1 for j in range(20)] for i in range(6)]  # 2 blocks each
    from sagellm.core.types import SamplingParams

    want = reference.generate(prompts, SamplingParams(max_tokens=10))
    seen: list[dict[str, float]] = []  # the engine loop reads stats() after every step
    stats = served.stats
    served.stats = lambda: seen.append(stats()) or seen[-1]

    async def one(client, prompt):
        stream = await client.completions.create(
            model="tiny",
            prompt=prompt,
            max_tokens=10,
            temperature=0,
            stream=True,
            extra_body={"return_token_ids": True},
        )
        return [
            t for chunk in [c async for c in stream] for c in chunk.choices for t in c.token_ids
        ]

    async def main():
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        try:
            return await asyncio.gather(*(one(client, p) for p in prompts))
        finally:
            await client.close()

    got = asyncio.run(main())
    assert got == want
    # the pool (4 blocks) held at most 2 of the 6 requests (30 tokens = 2 blocks) at a time;
    # the others waited; at the end every block is free
    assert max(s["num_running"] for s in seen) <= 2
    assert max(s["num_waiting"] for s in seen) >= 1
    assert served.stats()["num_kv_blocks_used"] == 0
