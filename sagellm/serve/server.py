"""``sagellm serve``: build the engine, then run the app under uvicorn."""

from __future__ import annotations

import os

from sagellm.core.config import EngineConfig
from sagellm.engines import create_engine
from sagellm.serve.app import create_app
from sagellm.serve.config import ServeConfig

API_KEY_ENV = "SAGELLM_API_KEY"


def resolve_api_key(flag: str | None) -> str | None:
    """``--api-key`` wins, then ``$SAGELLM_API_KEY``; empty means no key."""
    key = flag if flag is not None else os.environ.get(API_KEY_ENV)
    return key or None


def run_server(engine_cfg: EngineConfig, cfg: ServeConfig, log_level: str = "info") -> None:
    """Load the engine (blocking), then serve until interrupted."""
    import uvicorn

    engine = create_engine(engine_cfg)
    app = create_app(engine, cfg)
    where = f"http://{cfg.host}:{cfg.port}"
    auth = "API key required on /v1/*" if cfg.api_key else "no API key (open)"
    print(f"sagellm serve: {cfg.served_model_name} on {where} ({auth})", flush=True)
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
