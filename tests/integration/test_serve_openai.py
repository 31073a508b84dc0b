"""``sagellm serve`` driven by the ``openai`` package: completions and chat, streamed and not,
greedy output equal to the in-process engine's, usage counts, /v1/models, /metrics."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")

PROMPT = "The capital of France is"
MAX_TOKENS = 6
IDS = {"return_token_ids": True}


def _tok(ref):
    return ref.engine.tokenizer


def test_completion_matches_in_process_engine(serve_server, serve_reference):
    want = serve_reference(PROMPT, MAX_TOKENS, False)
    r = serve_server.client().completions.create(
        model=serve_server.model,
        prompt=PROMPT,
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body=IDS,
    )
    choice = r.choices[0]
    assert choice.token_ids == want
    assert choice.text == _tok(serve_reference).decode(want)
    assert choice.finish_reason in ("length", "stop")
    n_prompt = len(_tok(serve_reference).encode(PROMPT))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (n_prompt, len(want))
    assert r.usage.total_tokens == n_prompt + len(want)


def test_completion_stream_matches_and_reports_usage(serve_server, serve_reference):
    want = serve_reference(PROMPT, MAX_TOKENS, False)
    stream = serve_server.client().completions.create(
        model=serve_server.model,
        prompt=PROMPT,
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=IDS,
    )
    ids, text, usage, reasons = [], "", None, []
    for chunk in stream:
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
            continue
        c = chunk.choices[0]
        ids += c.token_ids
        text += c.text
        reasons.append(c.finish_reason)
    assert ids == want
    assert text == _tok(serve_reference).decode(want)
    assert reasons[-1] in ("length", "stop") and all(r is None for r in reasons[:-1])
    assert usage is not None and usage.completion_tokens == len(want)
    assert usage.prompt_tokens == len(_tok(serve_reference).encode(PROMPT))


def test_chat_matches_in_process_engine_streamed_and_not(serve_server, serve_reference):
    msg = "What is 2 + 2?"
    want = serve_reference(msg, MAX_TOKENS, True)
    text = _tok(serve_reference).decode(want)
    client = serve_server.client()
    kw = dict(
        model=serve_server.model,
        messages=[{"role": "user", "content": msg}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    r = client.chat.completions.create(**kw)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text
    assert r.usage.completion_tokens == len(want)
    assert r.usage.prompt_tokens == len(_tok(serve_reference).encode_chat(msg))
    parts, usage = [], None
    for chunk in client.chat.completions.create(
        **kw, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            parts.append(c.delta.content or "")
    assert "".join(parts) == text
    assert usage.completion_tokens == len(want)


def test_models_lists_the_served_model(serve_server):
    models = serve_server.client().models.list()
    assert [m.id for m in models.data] == [serve_server.model]


def test_metrics_parse_with_prometheus_parser(serve_server):
    from prometheus_client.parser import text_string_to_metric_families

    serve_server.client().completions.create(
        model=serve_server.model, prompt="Hello", max_tokens=2, temperature=0
    )
    text = httpx.get(serve_server.base_url + "/metrics", timeout=10).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:gpu_cache_usage_perc",
        "vllm:time_to_first_token_seconds",
        "vllm:time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:prefix_cache_queries",
        "sagellm:num_kv_blocks_used",
    ):
        assert name in fams, name
    gen = [s.value for s in fams["vllm:generation_tokens"].samples if s.name.endswith("_total")]
    assert gen and gen[0] >= 2
    ttft_count = [
        s.value
        for s in fams["vllm:time_to_first_token_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert ttft_count[0] >= 1
