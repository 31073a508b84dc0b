"""LMDeploy 0.11 reads ``hf_config.rope_theta``, which transformers 5 keeps only inside
``rope_parameters``: the engine hands it back through ``hf_overrides`` (CPU; the engine itself
needs CUDA, tests/gpu/test_lmdeploy_gpu.py)."""

import json

from sagellm.engines.lmdeploy.engine import transformers5_overrides


def test_rope_theta_comes_back_from_rope_parameters(tiny_checkpoint, tmp_path):
    _, folder = tiny_checkpoint("llama")
    assert transformers5_overrides(folder) == {"rope_theta": 10000.0}
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 50000.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert transformers5_overrides(tmp_path) == {"rope_theta": 50000.0}
