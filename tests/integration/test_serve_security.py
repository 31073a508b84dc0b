"""API key on every /v1 route (401 otherwise), /health open, and the limits: an oversized
body (413), ``n`` / ``max_tokens`` / prompt length past them (400), an unknown model (404);
after each the server serves the next request."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")

V1_ROUTES = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/v1/nonexistent", None),
]


def _ok(server) -> None:
    r = server.client().completions.create(
        model=server.model, prompt="Hello", max_tokens=2, temperature=0
    )
    assert r.usage.completion_tokens == 2


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "test-key-123", "Basic x"])
def test_missing_or_wrong_key_is_401_on_every_v1_route(serve_server, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path, body in V1_ROUTES:
        r = httpx.request(method, serve_server.base_url + path, json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["type"] == "authentication_error"


def test_health_and_metrics_are_open(serve_server):
    assert httpx.get(serve_server.base_url + "/health").status_code == 200
    assert httpx.get(serve_server.base_url + "/metrics").status_code == 200


def _post(server, path: str, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.api_key}", **kw.pop("headers", {})}
    return httpx.post(server.base_url + path, headers=headers, timeout=30, **kw)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"prompt": "hi", "n": 2}, 400, "n"),
        ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "hi", "max_tokens": -3}, 400, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 65}, 400, "max_tokens"),  # the limit is 64
        ({"prompt": "hi " * 400, "max_tokens": 1}, 400, "prompt"),  # limit 256 tokens
        ({"prompt": "hi", "model": "no-such-model"}, 404, "model"),
        ({"prompt": "hi", "temperature": -1}, 400, "temperature"),
        ({"prompt": "hi", "stop": ["x"]}, 400, "stop"),
    ],
)
def test_limits_give_4xx_naming_the_field_then_serving_goes_on(serve_server, body, status, param):
    r = _post(serve_server, "/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"]
    _ok(serve_server)


def test_oversized_body_is_413_then_serving_goes_on(serve_server):
    r = _post(serve_server, "/v1/completions", json={"prompt": "x" * 70_000, "max_tokens": 1})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["type"] == "request_too_large"
    # no Content-Length (chunked): the cap holds while reading
    chunks = (b'{"prompt": "' + b"x" * 10_000 for _ in range(8))
    r = _post(serve_server, "/v1/completions", content=chunks)
    assert r.status_code == 413, r.text
    _ok(serve_server)


def test_openai_client_sees_the_errors_as_exceptions(serve_server):
    import openai

    bad = openai.OpenAI(base_url=serve_server.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError) as exc:
        serve_server.client(max_retries=0).completions.create(
            model=serve_server.model, prompt="hi", n=3
        )
    assert "n" in str(exc.value)
    with pytest.raises(openai.NotFoundError):
        serve_server.client(max_retries=0).completions.create(model="other", prompt="hi")
