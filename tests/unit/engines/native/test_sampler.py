import torch

from sagellm.accel.speculative.probs import filter_top_k_top_p
from sagellm.core.types import SamplingParams
from sagellm.engines.native.sampler import sample


def test_greedy_is_argmax():
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 1.0, 0.0]])
    assert sample(logits, [SamplingParams(), SamplingParams()], [None, None]) == [1, 0]


def test_top_k_and_top_p_masks():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_top_k_top_p(logits, torch.tensor([2]), torch.tensor([1.0]))
    assert torch.isinf(k2[0, 2:]).all() and torch.isfinite(k2[0, :2]).all()
    # top_p=0.7: 0.5 (mass before 0) and 0.3 (mass before 0.5 < 0.7) kept; 0.15 (0.8) dropped
    p = filter_top_k_top_p(logits, torch.tensor([4]), torch.tensor([0.7]))
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    # a tiny top_p still keeps the most likely token
    p = filter_top_k_top_p(logits, torch.tensor([4]), torch.tensor([1e-6]))
    assert torch.isfinite(p[0, 0]) and torch.isinf(p[0, 1:]).all()


def test_seeded_sampling_is_reproducible_and_independent_of_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    sp = SamplingParams(temperature=1.0, seed=11)
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    alone = [sample(logits[1:2], [sp], [g()])[0] for _ in range(1)]
    batched = sample(logits, [SamplingParams(), sp, SamplingParams()], [None, g(), None])
    assert batched[1] == alone[0]


def test_sampling_follows_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    gen = torch.Generator().manual_seed(0)
    sp = SamplingParams(temperature=1.0)
    counts = torch.zeros(3)
    for _ in range(2000):
        counts[sample(logits, [sp], [gen])[0]] += 1
    freq = counts / counts.sum()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.04)
