"""LMDeploy's PyTorch engine with the sagellm hooks on CUDA (skipped without CUDA or lmdeploy):
greedy output equals the native engine (both bfloat16: LMDeploy has no float32 path, so 8
tokens on a wide-gap random model), and the hooks collected metrics.

Seen failing on the lent H200 (2026-12-04), whose image has torch 2.11, triton 3.6 and
transformers 5.17, beyond what lmdeploy 0.11.0 declares (sagellm.engines.lmdeploy.compat):
the native engine equalled HF bf16 on CUDA, LMDeploy did not, and LMDeploy without the patch
series (weights loaded bit-exact) did not either. It needs a machine with LMDeploy's own pins."""

import importlib.util

import pytest
import torch

from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("lmdeploy") is None, reason="needs lmdeploy"),
]


def _with_tokenizer(folder, dst):
    """A copy of the tiny checkpoint ``folder`` with a word-level tokenizer of its 256 ids
    (LMDeploy's model agent loads one from the model folder; the prompts are token ids)."""
    import shutil

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    shutil.copytree(folder, dst)
    vocab = {f"t{i}": i for i in range(256)}
    words = Tokenizer(WordLevel(vocab, unk_token="t0"))
    words.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="t255")  # the test ignores EOS
    tok.save_pretrained(dst)
    return dst


def test_lmdeploy_greedy_equals_native_with_hooks_on(tiny_checkpoint, tmp_path, monkeypatch):
    from sagellm.engines import create_engine
    from sagellm.engines.lmdeploy.compat import ALLOW_ENV

    monkeypatch.setenv(ALLOW_ENV, "1")  # the image's torch/triton/transformers
    folder = _with_tokenizer(tiny_checkpoint("llama-d64")[1], tmp_path / "tiny-llama")
    base = dict(
        model=ModelConfig(path=str(folder), dtype="bfloat16"),
        device="cuda",
        num_kv_blocks=64,
        block_size_tokens=16,
        enable_prefix_caching=True,
    )
    g = torch.Generator().manual_seed(3)
    shared = torch.randint(0, 256, (40,), generator=g).tolist()
    prompts = [[*shared, 1, 2], [*shared, 3], torch.randint(0, 256, (9,), generator=g).tolist()]
    sp = SamplingParams(max_tokens=8, ignore_eos=True)
    engine = create_engine(EngineConfig(name="lmdeploy", scheduling_strategy="priority", **base))
    try:
        first = engine.generate(prompts[:1], sp)
        rest = engine.generate(prompts[1:], sp)
        stats = engine.stats()
    finally:
        engine.close()
    native = NativeEngine(EngineConfig(**base)).generate(prompts, sp)
    assert first + rest == native
    assert stats["prefix_hit_tokens"] >= 32  # the shared 2 blocks, found by BlockTrie.match
    assert engine.decider.num_decisions > 0
