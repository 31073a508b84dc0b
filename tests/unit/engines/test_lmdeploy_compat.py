"""LMDeploy 0.11.0's environment (CPU; the engine itself needs CUDA, tests/gpu): the engine
refuses to run beyond the versions the wheel declares, naming them, and hands back the
``rope_theta`` transformers 5 keeps only in ``rope_parameters``."""

import importlib.metadata
import json

import pytest

from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.core.errors import ConfigError
from sagellm.engines import create_engine
from sagellm.engines.lmdeploy import compat


def test_versions_above_the_declared_bounds_are_named():
    seen = {"torch": "2.11.0+cu130", "triton": "3.4.0", "transformers": "4.56.1"}
    assert compat.unsupported_versions(seen.__getitem__) == [
        "torch 2.11.0+cu130 (lmdeploy 0.11.0 declares <=2.8.0)"
    ]
    within = {"torch": "2.8.0", "triton": "3.3.1", "transformers": "4.56.1"}
    assert compat.unsupported_versions(within.__getitem__) == []

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    assert compat.unsupported_versions(absent) == []


def test_engine_refuses_unsupported_versions_unless_allowed(monkeypatch):
    monkeypatch.setattr(
        "sagellm.engines.lmdeploy.engine.unsupported_versions", lambda: ["torch 2.13.0 (...)"]
    )
    monkeypatch.delenv(compat.ALLOW_ENV, raising=False)
    cfg = EngineConfig(
        name="lmdeploy", device="cuda", model=ModelConfig(path="x", dtype="bfloat16")
    )
    with pytest.raises(ConfigError, match=r"torch 2.13.0.*SAGELLM_LMDEPLOY_ALLOW_UNSUPPORTED=1"):
        create_engine(cfg)
    monkeypatch.setenv(compat.ALLOW_ENV, "1")
    with pytest.raises(Exception) as err:  # past the check: the overlay or the model folder
        create_engine(cfg)
    assert "declared requirements" not in str(err.value)


def test_rope_theta_comes_back_from_rope_parameters(tiny_checkpoint, tmp_path):
    _, folder = tiny_checkpoint("llama")
    assert compat.transformers5_overrides(folder) == {"rope_theta": 10000.0}
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 50000.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert compat.transformers5_overrides(tmp_path) == {"rope_theta": 50000.0}
