"""``NativeEngine.prompt_logits``: teacher-forced logits equal HF transformers fp32 at every
scored position, whether the prefix comes from the prefix cache or is computed, chunked or
not; bad positions are refused and the engine keeps serving."""

import pytest
import torch

from sagellm.core.errors import InvalidRequestError
from sagellm.engines.native import NativeEngine

LOGIT_ATOL = 1e-3  # fp32: different summation orders only


def _hf_logits(model, ids):
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0]


@pytest.fixture
def llama(tiny_checkpoint):
    return tiny_checkpoint("llama")


def test_scored_rows_equal_hf_with_and_without_a_cache_hit(llama):
    model, folder = llama
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 256, (70,), generator=g).tolist()
    engine = NativeEngine.from_pretrained(
        folder, num_kv_blocks=32, max_num_batched_tokens=32, enable_prefix_caching=True
    )
    ref = _hf_logits(model, ids)
    cold = engine.prompt_logits(ids[:50], 10)  # chunked: 32 + 18 tokens
    assert cold.shape == (40, 256)
    torch.testing.assert_close(cold, ref[10:50], atol=LOGIT_ATOL, rtol=0)
    # the first 48 tokens (3 blocks) are cached now; scoring from 49 reuses them
    warm = engine.prompt_logits(ids, 49)
    assert engine.request_metrics()[-1].num_cached_tokens == 48
    torch.testing.assert_close(warm, ref[49:70], atol=LOGIT_ATOL, rtol=0)
    # scoring from 40 must recompute positions 32.. (the cache may give only 2 blocks)
    mid = engine.prompt_logits(ids, 40)
    assert engine.request_metrics()[-1].num_cached_tokens == 32
    torch.testing.assert_close(mid, ref[40:70], atol=LOGIT_ATOL, rtol=0)
    assert engine.kv.num_referenced_blocks == 0


def test_bad_positions_are_refused_and_the_engine_keeps_serving(llama):
    _, folder = llama
    engine = NativeEngine.from_pretrained(folder, num_kv_blocks=16)
    for bad in (-1, 5):
        with pytest.raises(InvalidRequestError, match="from_tokens must be in"):
            engine.prompt_logits([1, 2, 3, 4, 5], bad)
    assert engine.prompt_logits([1, 2, 3, 4, 5], 4).shape == (1, 256)
    assert engine.vocab_size == 256
