"""Shared pytest fixtures: tiny random HF checkpoints (created, never downloaded) and markers."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    initializer_range=0.2,  # wide top-2 logit gaps, so fp32 reorderings cannot flip a token
    eos_token_id=None,
    bos_token_id=None,
)


def make_tiny_model(family: str, seed: int = 0):
    """A random tiny Llama / Qwen2 / Qwen3 model in fp32 eval mode."""
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    torch.manual_seed(seed)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**TINY_COMMON)).eval()
    if family == "llama-d64":  # head size 64 (as SmolLM2's): the C++ row kernels' vector RoPE
        return LlamaForCausalLM(LlamaConfig(head_dim=64, **TINY_COMMON)).eval()
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**TINY_COMMON)).eval()
    if family == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(head_dim=32, **TINY_COMMON)).eval()
    raise ValueError(family)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``tiny_checkpoint(family) -> (hf_model, folder)``, cached per session."""
    cache: dict[str, tuple] = {}

    def get(family: str):
        if family not in cache:
            model = make_tiny_model(family)
            folder = tmp_path_factory.mktemp(f"tiny-{family}")
            model.save_pretrained(folder)
            cache[family] = (model, folder)
        return cache[family]

    return get


class _SpinModel:
    """Wraps an engine's model: after each forward it spins the CPU for ``extra`` times the
    forward's duration (real work occupying the core, inside the step's timing, as a slower
    kernel would be)."""

    def __init__(self, inner, extra: float) -> None:
        self.inner, self.extra = inner, extra

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, *args, **kwargs):
        import time

        t = time.perf_counter()
        out = self.inner.forward(*args, **kwargs)
        until = time.perf_counter() + (time.perf_counter() - t) * self.extra
        while time.perf_counter() < until:
            pass
        return out


def SpinEngine(engine, extra: float):
    """Test-only: ``engine`` made slower by ``extra`` (0.10 = 10% more forward time)."""
    engine.model = _SpinModel(engine.model, extra)
    return engine


@pytest.fixture(scope="session")
def spin_engine_cls():
    """:func:`SpinEngine`."""
    return SpinEngine


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """An engine with ``num_threads`` set changes torch's process-wide thread count; give every
    test the count the session started with, so one test's engine cannot slow the rest."""
    import torch

    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
