import subprocess
import sys
from pathlib import Path

import pytest

from sagellm.core import ConfigError, EngineConfig, SageLLMConfig, load_config, parse_config
from sagellm.core.config import config_hash


def test_yaml_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("engine:\n  block_size_tokens: 32\n  model:\n    dtype: bfloat16\n")
    cfg = load_config(p)
    assert cfg.engine.block_size_tokens == 32
    assert cfg.engine.model.dtype == "bfloat16"
    assert cfg.engine.max_num_batched_tokens == EngineConfig().max_num_batched_tokens


def test_error_names_path_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        parse_config({"engine": {"model": {"dtype": "fp8"}}})
    msg = str(e.value)
    assert msg.startswith("engine.model.dtype:")
    assert "'float32'" in msg and "'bfloat16'" in msg and "'fp8'" in msg


def test_error_on_bad_number_and_unknown_field():
    with pytest.raises(ConfigError, match=r"engine\.block_size_tokens: .*greater than or equal"):
        parse_config({"engine": {"block_size_tokens": 0}})
    with pytest.raises(ConfigError, match=r"engine\.blocksize"):
        parse_config({"engine": {"blocksize": 16}})


def test_chunked_prefill_off_needs_budget():
    with pytest.raises(ConfigError, match="max_num_batched_tokens"):
        parse_config(
            {
                "engine": {
                    "enable_chunked_prefill": False,
                    "max_num_batched_tokens": 64,
                    "max_model_len_tokens": 128,
                }
            }
        )


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_hash_is_stable_and_sensitive():
    a, b = SageLLMConfig(), SageLLMConfig()
    assert config_hash(a) == config_hash(b)
    c = parse_config({"engine": {"block_size_tokens": 8}})
    assert config_hash(a) != config_hash(c)


def test_eviction_policy_accepts_registered_names_and_lists_them_otherwise():
    assert (
        parse_config({"engine": {"eviction_policy": "s3fifo"}}).engine.eviction_policy == "s3fifo"
    )
    with pytest.raises(ConfigError) as err:
        parse_config({"engine": {"eviction_policy": "mru"}})
    msg = str(err.value)
    assert msg.startswith("engine.eviction_policy:")
    assert "known: arc, cost_aware, lfu, lru, s3fifo, sieve" in msg


def test_validating_a_config_imports_no_research_module():
    code = (
        "import sys; from sagellm.core.config import parse_config; "
        "parse_config({'engine': {'eviction_policy': 's3fifo'}}); "
        "print(sorted(m for m in sys.modules if m.startswith('sagellm.kv_policy')))"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
