"""Sparse attention on CUDA matches the same configuration on CPU (skipped without CUDA)."""

import pytest
import torch

from sagellm.core.config import AccelConfig
from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(
    "accel",
    [
        AccelConfig(enable_sparsity=True, sink_tokens=4, window_tokens=12),
        AccelConfig(enable_sparsity=True, sparsity_method="quest", quest_top_k_blocks=3),
    ],
    ids=["streaming", "quest"],
)
def test_cuda_sparse_equals_cpu(tiny_checkpoint, accel):
    _, folder = tiny_checkpoint("llama")
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (60, 9, 33)]
    sp = SamplingParams(max_tokens=16, ignore_eos=True)
    outs = {}
    for device in ("cpu", "cuda"):
        eng = NativeEngine.from_pretrained(
            folder, device=device, block_size_tokens=4, num_kv_blocks=96, accel=accel
        )
        outs[device] = eng.generate(prompts, sp)
        assert eng.kv.num_referenced_blocks == 0
    assert outs["cuda"] == outs["cpu"]
