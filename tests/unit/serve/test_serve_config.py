"""API key resolution, CLI flags -> configs, and ServeConfig's bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sagellm.cli import build_parser
from sagellm.serve.config import ServeConfig
from sagellm.serve.server import API_KEY_ENV, resolve_api_key


def test_flag_wins_over_env_and_empty_means_no_key(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert resolve_api_key(None) == "from-env"
    assert resolve_api_key("flag") == "flag"
    assert resolve_api_key("") is None
    monkeypatch.delenv(API_KEY_ENV)
    assert resolve_api_key(None) is None


def test_serve_flags_and_loopback_default():
    args = build_parser().parse_args(
        ["serve", "--strategy", "lpm", "--num-kv-blocks", "64", "--max-concurrent-streams", "8"]
    )
    assert (args.host, args.strategy, args.num_kv_blocks) == ("127.0.0.1", "lpm", 64)
    assert args.max_concurrent_streams == 8 and not args.metrics_require_key
    assert ServeConfig(served_model_name="m").host == "127.0.0.1"


def test_only_n_1_is_configurable():
    with pytest.raises(ValidationError):
        ServeConfig(served_model_name="m", max_n=2)
