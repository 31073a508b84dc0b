"""OpenAI-compatible HTTP serving of one engine (``sagellm serve``; extra ``sagellm[serve]``).

``app`` (FastAPI routes) -> ``inputs`` (body -> prompt ids + SamplingParams, limits checked)
-> ``engine_loop`` (the one thread owning the engine, batching every connection's requests)
-> ``responses`` (JSON or SSE chunks). ``metrics``: Prometheus (vLLM names); ``security``:
API key and body cap; ``protocol``: the pydantic request bodies. FastAPI/uvicorn are imported
only by this package, never by ``import sagellm``.
"""

from sagellm.serve.app import create_app
from sagellm.serve.config import ServeConfig
from sagellm.serve.engine_loop import EngineLoop
from sagellm.serve.errors import APIError
from sagellm.serve.metrics import ServeMetrics
from sagellm.serve.server import API_KEY_ENV, resolve_api_key, run_server

__all__ = [
    "API_KEY_ENV",
    "APIError",
    "EngineLoop",
    "ServeConfig",
    "ServeMetrics",
    "create_app",
    "resolve_api_key",
    "run_server",
]
