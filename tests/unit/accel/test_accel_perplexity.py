"""Teacher-forced logits equal HF transformers fp32, and the strided perplexity scores every
token once with the stated context (checked against HF's own loss on a tiny checkpoint)."""

import math

import pytest
import torch

from sagellm.accel.perplexity import perplexity
from sagellm.engines.native import NativeEngine


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    return model, NativeEngine.from_pretrained(folder, num_kv_blocks=8)


def test_teacher_forced_logits_equal_hf(tiny):
    model, engine = tiny
    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    ours = engine.teacher_forced_logits(ids)
    with torch.inference_mode():
        ref = model(torch.tensor([ids])).logits[0]
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    assert engine.kv.num_referenced_blocks == 0  # the engine's pool is untouched


def test_strided_perplexity_matches_hf_loss(tiny):
    model, engine = tiny
    ids = torch.randint(0, 256, (70,), generator=torch.Generator().manual_seed(4)).tolist()
    W, S = 32, 16
    got = perplexity(engine, ids, W, S)
    assert got.num_scored_tokens == len(ids) - 1
    # HF reference: the same windows, -100 on the tokens an earlier window scored
    total, begin, done = 0.0, 0, 1
    with torch.inference_mode():
        while done < len(ids):
            end = min(begin + W, len(ids))
            x = torch.tensor([ids[begin:end]])
            labels = x.clone()
            labels[0, : done - begin] = -100
            n = end - done
            total += float(model(x, labels=labels).loss) * n
            done, begin = end, begin + S
    assert got.mean_nll == pytest.approx(total / (len(ids) - 1), rel=1e-4)
    assert got.perplexity == pytest.approx(math.exp(got.mean_nll))


@pytest.mark.parametrize("w,s", [(1, 1), (8, 0), (8, 8)])
def test_bad_window(tiny, w, s):
    with pytest.raises(ValueError, match="window_tokens|stride_tokens"):
        perplexity(tiny[1], list(range(20)), w, s)
