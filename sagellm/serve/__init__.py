"""OpenAI-compatible HTTP serving of one engine (``sagellm serve``; extra ``sagellm[serve]``).

FastAPI routes (``app``) over one engine thread (``engine_loop``) that batches every
connection's requests; Prometheus metrics (``metrics``); limits and API key (``security``).
FastAPI/uvicorn are imported only by this package, never by ``import sagellm``.
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
