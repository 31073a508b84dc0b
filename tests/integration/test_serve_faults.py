"""Faults: malformed requests get 4xx and the next succeeds; a client closing its stream
mid-generation gets its request aborted and KV blocks freed while the others finish; 64
concurrent streaming clients all complete with no lost or duplicated token."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")


def _metrics(server) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            reason = s.labels.get("finished_reason")
            out[s.name + (f"/{reason}" if reason else "")] = s.value
    return out


def _auth(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[1, 2]",
        b'{"prompt": 5}',
        b'{"max_tokens": 2}',  # no prompt
        b'{"prompt": "hi", "max_tokens": "many"}',
        b'{"prompt": [999999999], "max_tokens": 1}',  # token id outside the vocabulary
        b'{"prompt": ["a", "b"]}',  # batched prompts: not supported
        b"\xff\xfe",
    ],
)
def test_malformed_requests_get_400_and_the_next_succeeds(serve_server, content):
    url = serve_server.base_url + "/v1/completions"
    headers = {**_auth(serve_server), "Content-Type": "application/json"}
    r = httpx.post(url, content=content, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"]
    r = httpx.post(url, json={"prompt": "Hi", "max_tokens": 1}, headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 1


def test_closing_a_stream_aborts_it_and_frees_its_blocks(serve_server, serve_reference):
    before = _metrics(serve_server)
    client = serve_server.client()
    doomed = client.completions.create(
        model=serve_server.model,
        prompt="Tell me a long story about a dragon.",
        max_tokens=64,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    it = iter(doomed)
    next(it), next(it)  # two tokens in: it is running and holds blocks
    used = _metrics(serve_server)["sagellm:num_kv_blocks_used"]
    assert used >= 1
    doomed.close()
    # another client's request still completes, and exactly
    want = serve_reference("The capital of France is", 6, False)
    r = client.completions.create(
        model=serve_server.model,
        prompt="The capital of France is",
        max_tokens=6,
        temperature=0,
        extra_body={"return_token_ids": True},
    )
    assert r.choices[0].token_ids == want
    deadline = time.monotonic() + 20
    while True:
        m = _metrics(serve_server)
        aborted = m.get("vllm:request_success_total/abort", 0) - before.get(
            "vllm:request_success_total/abort", 0
        )
        if aborted == 1 and m["sagellm:num_kv_blocks_used"] == 0:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.2)
    assert m["vllm:num_requests_running"] == 0
    # it stopped early: far fewer than the 64 tokens it asked for were generated
    assert m["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] < 64


def test_a_non_streamed_client_that_leaves_is_aborted(serve_server):
    before = _metrics(serve_server).get("vllm:request_success_total/abort", 0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            serve_server.base_url + "/v1/completions",
            json={"prompt": "Count to one hundred:", "max_tokens": 64, "ignore_eos": True},
            headers=_auth(serve_server),
            timeout=httpx.Timeout(30, read=0.5),
        )
    deadline = time.monotonic() + 20
    while True:  # aborted (not run to its 64 tokens) and its blocks freed
        m = _metrics(serve_server)
        aborted = m.get("vllm:request_success_total/abort", 0) - before
        if aborted == 1 and m["sagellm:num_kv_blocks_used"] == 0:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.2)


PROMPTS = ["Hello", "One, two,", "The sky is", "def add(a, b):"]


def test_64_concurrent_streams_complete_without_lost_or_duplicated_tokens(
    serve_server, serve_reference
):
    max_tokens = 4
    want = {p: serve_reference(p, max_tokens, False) for p in PROMPTS}

    async def one(client, i: int) -> tuple[str, list[int], int]:
        prompt = PROMPTS[i % len(PROMPTS)]
        stream = await client.completions.create(
            model=serve_server.model,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"return_token_ids": True},
        )
        ids, n_usage = [], None
        async for chunk in stream:
            if chunk.usage is not None:
                n_usage = chunk.usage.completion_tokens
            for c in chunk.choices:
                ids += c.token_ids
        return prompt, ids, n_usage

    async def main():
        client = serve_server.async_client(max_retries=0, timeout=120)
        try:
            return await asyncio.gather(*(one(client, i) for i in range(64)))
        finally:
            await client.close()

    t0 = time.monotonic()
    results = asyncio.run(main())
    elapsed = time.monotonic() - t0
    assert len(results) == 64
    for prompt, ids, n_usage in results:
        assert ids == want[prompt], prompt
        assert n_usage == len(ids)
    print(f"64 streams x {max_tokens} tokens in {elapsed:.1f}s")
