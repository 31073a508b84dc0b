"""compare_logits: perplexity, logit error, KL and top-1 agreement on known logits."""

import math

import pytest
import torch

from sagellm.accel.sparse import compare_logits, decode_accuracy


def test_identical_logits_have_no_error():
    lg = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    acc = compare_logits(lg, lg.clone(), torch.tensor([0, 1]), 10)
    assert acc.max_abs_logit_error == 0 and acc.mean_kl_nats == 0 and acc.top1_agreement == 1
    nll = -(math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(math.e / (math.e + 2))) / 2
    assert acc.dense_perplexity == pytest.approx(math.exp(nll))
    assert acc.perplexity_ratio == 1


def test_known_kl_and_disagreement():
    dense = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    sparse = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
    acc = compare_logits(dense, sparse, torch.tensor([0, 0]), 4)
    kl = 0.9 * math.log(0.9 / 0.2) + 0.1 * math.log(0.1 / 0.8)
    assert acc.max_kl_nats == pytest.approx(kl, rel=1e-5)
    assert acc.mean_kl_nats == pytest.approx(kl / 2, rel=1e-5)
    assert acc.top1_agreement == 0.5
    assert acc.max_abs_logit_error == pytest.approx(math.log(0.8) - math.log(0.1), rel=1e-5)


def test_bad_shapes_and_lengths():
    with pytest.raises(ValueError, match="shapes differ"):
        compare_logits(torch.zeros(2, 3), torch.zeros(3, 3), torch.tensor([0, 1]), 1)
    with pytest.raises(ValueError, match="need 12 tokens"):
        decode_accuracy(None, None, list(range(5)), 8, 4)
    with pytest.raises(ValueError, match="context_tokens"):
        decode_accuracy(None, None, list(range(5)), 0, 4)
