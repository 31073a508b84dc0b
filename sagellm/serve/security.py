"""API-key check (constant time) and a request body read under a byte cap."""

from __future__ import annotations

import hmac
import json

from fastapi import Request

from sagellm.serve.errors import APIError


def check_api_key(request: Request, api_key: str | None) -> None:
    """Raise 401 unless ``Authorization: Bearer <api_key>`` matches (no key set: open)."""
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    )
    if not ok:
        raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')")


async def read_json_body(request: Request, max_bytes: int) -> dict:
    """The body parsed as a JSON object; 413 past ``max_bytes`` (read no further), 400 if it
    is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise APIError(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    return body
