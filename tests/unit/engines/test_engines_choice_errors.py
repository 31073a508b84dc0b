"""Choosing an engine: unknown names list the known and installed ones; a missing package names
what to install; a strategy or feature an engine cannot honour names its capabilities."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.core.errors import ConfigError
from sagellm.core.installed import ENGINE_NAMES, installed_engine_names
from sagellm.engines import ENGINES, create_engine
from sagellm.engines.lmdeploy import overlay


def test_pinned_lmdeploy_version_matches_third_party():
    from sagellm.core.installed import REPO_ROOT

    pinned = (REPO_ROOT / "third_party" / "lmdeploy" / "VERSION").read_text().strip()
    assert pinned == overlay.LMDEPLOY_VERSION


def test_every_known_engine_is_registered():
    assert ENGINES.names() == sorted(ENGINE_NAMES)
    assert "native" in installed_engine_names()


def test_unknown_engine_lists_known_and_installed():
    with pytest.raises(ValidationError) as e:
        EngineConfig(name="trtllm")
    msg = str(e.value)
    assert "known: lmdeploy, native, vllm" in msg and "installed here: " in msg


def test_vllm_without_its_environment_names_the_make_target(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGELLM_VLLM_PYTHON", str(tmp_path / "missing" / "python"))
    assert "vllm" not in installed_engine_names()
    with pytest.raises(ConfigError, match="make vllm-env"):
        create_engine(EngineConfig(name="vllm", block_size_tokens=32))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"scheduling_strategy": "aegaeon"}, r"cannot honour 'aegaeon'.*admission_order"),
        ({"scheduling_strategy": "nope"}, "known: "),
        ({"block_size_tokens": 16}, "multiple of 32"),
        ({"num_kv_blocks": 8, "tenant_quotas": {"a": {"hard_blocks": 2}}}, "capabilities: "),
        ({"device": "cuda"}, "allowed: 'cpu'"),
        ({"num_decode_steps": 8}, r"engine.num_decode_steps: .*capabilities: "),
    ],
)
def test_vllm_refuses_what_it_cannot_honour(kw, match):
    cfg = EngineConfig(name="vllm", **{"block_size_tokens": 32, **kw})
    with pytest.raises(ConfigError, match=match):
        create_engine(cfg)


def test_lmdeploy_needs_cuda_and_bfloat16():
    with pytest.raises(ConfigError, match="CUDA only"):
        create_engine(EngineConfig(name="lmdeploy", model=ModelConfig(path="x")))
    with pytest.raises(ConfigError, match="allowed: 'bfloat16'"):
        create_engine(EngineConfig(name="lmdeploy", device="cuda", model=ModelConfig(path="x")))


def test_lmdeploy_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(overlay.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"make lmdeploy.*sagellm\[lmdeploy\]"):
        overlay.activate_overlay(tmp_path / "overlay")


def test_lmdeploy_without_the_patches_names_the_script(tmp_path, monkeypatch):
    monkeypatch.setattr(overlay.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(ConfigError, match="apply_patches.sh"):
        overlay.activate_overlay(tmp_path / "overlay")
