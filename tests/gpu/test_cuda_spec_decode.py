"""Speculative decoding on CUDA equals plain CUDA decoding (skipped without CUDA; not run on
the machine it was written on: no GPU there)."""

import pytest
import torch

from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig
from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method", ["ngram", "layer_skip", "draft_model"])
def test_cuda_speculative_equals_plain(tiny_checkpoint, method):
    _, folder = tiny_checkpoint("llama")

    def engine(accel):
        cfg = EngineConfig(
            model=ModelConfig(path=str(folder)),
            device="cuda",
            num_kv_blocks=128,
            block_size_tokens=4,
            enable_prefix_caching=True,
            accel=accel,
        )
        return NativeEngine(cfg)

    g = torch.Generator().manual_seed(3)
    grams = [torch.randint(0, 256, (6,), generator=g).tolist() for _ in range(3)]
    prompts = [gr * 3 for gr in grams]
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    plain = engine(AccelConfig()).generate(prompts, sp)
    spec = engine(AccelConfig(speculative_tokens=3, speculative_method=method))
    assert spec.generate(prompts, sp) == plain
    assert spec.stats()["spec_num_draft_tokens"] > 0
    sampled = [SamplingParams(max_tokens=8, temperature=0.9, seed=1)] * 3
    assert all(len(o) == 8 for o in spec.generate(prompts, sampled))
