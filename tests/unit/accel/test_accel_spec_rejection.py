"""Rejection sampling preserves the target distribution (statistical, fixed seeds).

The target and the draft are Markov chains on a 3-token vocabulary (next-token logits depend
on the last token only), wrapped as ``CausalLM``s, so the exact distribution of any output is
a product of the target's rows. ``run_speculative_decode`` draws 4-token outputs with up to 2
drafts per round (the first token comes from the prefill, tokens 2-4 from verify rounds of 2
drafts, 1 draft, ...); the empirical distribution of tokens 2-4 (27 outcomes) over N runs must
be within total variation ``TV_BOUND`` of the exact one. Sampling noise at N = 3000 is at most
0.4 * sqrt(27 / N) ~ 0.04. The draft chain itself is at TV > 0.25 from the target (exact
numbers), and a verifier that always accepts drafts fails the bound (measured TV ~ 0.55).
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from sagellm.accel.speculative import (
    Draft,
    ModelDrafter,
    NgramDrafter,
    Verifier,
    VerifyResult,
    run_speculative_decode,
    sampling_probs,
)
from sagellm.core.types import SamplingParams

V = 3
N_SAMPLES = 3000
TV_BOUND = 0.06
OUT_LEN = 4  # tokens 2..4 are compared
TARGET_LOGITS = torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.5, 1.0], [1.0, 0.0, 2.0]])
# a draft that is roughly right but systematically off
DRAFT_LOGITS = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.5, 2.0], [2.0, 0.0, 1.0]])


@pytest.fixture(autouse=True)
def one_thread():
    """4x4 softmaxes: with several intra-op threads each call waits on a thread barrier
    (milliseconds on a loaded machine); one thread keeps the sampling loop fast."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class MarkovLM:
    """A CausalLM whose next-token logits are ``table[last token]`` (KV = the token list)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self.held: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return self.table.shape[1]

    def num_cached_tokens(self, key):
        return len(self.held.get(key, []))

    def extend(self, batch, all_positions=False):
        out = []
        for key, toks in batch:
            self.held.setdefault(key, []).extend(toks)
            rows = self.table[torch.tensor(list(toks))]
            out.append(rows if all_positions else rows[-1:])
        return out

    def truncate(self, key, n):
        del self.held[key][n:]

    def release(self, key):
        self.held.pop(key, None)


def exact_distribution(table: torch.Tensor, sp: SamplingParams, first: int) -> dict:
    """P(tokens 2..OUT_LEN) of the chain started after token ``first``."""
    probs = sampling_probs(table, sp)
    out: dict = {}
    for seq in itertools.product(range(V), repeat=OUT_LEN):
        p, prev = 1.0, first
        for t in seq:
            p *= float(probs[prev, t])
            prev = t
        out[seq[1:]] = out.get(seq[1:], 0.0) + p
    return out


def tv(empirical: Counter, exact: dict) -> float:
    n = sum(empirical.values())
    return 0.5 * sum(abs(empirical.get(s, 0) / n - p) for s, p in exact.items())


class AlwaysAccept(Verifier):
    """The classic bug: keep every draft, then sample the bonus from the target."""

    def verify(self, target_logits, draft, sampling, generator=None):
        p = sampling_probs(target_logits[-1:], sampling)[0]
        tok = int(torch.multinomial(p, 1, generator=generator))
        return VerifyResult([*draft.token_ids, tok], len(draft))


def sample_outputs(drafter, sp, verifier=None, n=N_SAMPLES) -> Counter:
    counts: Counter = Counter()
    target = MarkovLM(TARGET_LOGITS)
    for i in range(n):
        res = run_speculative_decode(
            target,
            drafter,
            [0, 1, 2, 1, 0],  # ends in 0
            num_draft_tokens=2,
            sampling=SamplingParams(
                max_tokens=OUT_LEN, temperature=sp.temperature, top_k=sp.top_k, seed=i + 1
            ),
            verifier=verifier,
        )
        assert len(res.token_ids) == OUT_LEN
        counts[tuple(res.token_ids[1:])] += 1
    return counts


def test_model_drafts_keep_the_target_distribution():
    sp = SamplingParams(temperature=1.0)
    exact = exact_distribution(TARGET_LOGITS, sp, first=0)
    drafter = ModelDrafter(MarkovLM(DRAFT_LOGITS))
    counts = sample_outputs(drafter, sp)
    print("TV model drafter:", tv(counts, exact))
    assert tv(counts, exact) < TV_BOUND


def test_always_accepting_fails_the_same_bound():
    sp = SamplingParams(temperature=1.0)
    exact = exact_distribution(TARGET_LOGITS, sp, first=0)
    wrong = exact_distribution(DRAFT_LOGITS, sp, first=0)  # the chain accepted drafts follow
    assert tv(Counter({s: round(p * 10**6) for s, p in wrong.items()}), exact) > 0.25
    counts = sample_outputs(ModelDrafter(MarkovLM(DRAFT_LOGITS)), sp, AlwaysAccept(), n=2000)
    print("TV always-accept:", tv(counts, exact))
    assert tv(counts, exact) > TV_BOUND


def test_point_mass_drafts_with_top_k_keep_the_filtered_distribution():
    """N-gram drafts (a point mass) under temperature 0.7 and top_k=2: the target is the
    filtered distribution (one token per row has probability 0)."""
    sp = SamplingParams(temperature=0.7, top_k=2)
    exact = exact_distribution(TARGET_LOGITS, sp, first=0)
    counts = sample_outputs(NgramDrafter(1, 2), sp)
    print("TV ngram top_k:", tv(counts, exact))
    assert tv(counts, exact) < TV_BOUND
    filtered_out = [s for s, p in exact.items() if p == 0.0]
    assert filtered_out and not any(counts[s] for s in filtered_out)


def test_greedy_verify_takes_the_longest_matching_prefix():
    logits = torch.eye(5)[[3, 1, 4, 0]] * 5  # argmax per row: 3, 1, 4, 0
    v = Verifier()
    greedy = SamplingParams()
    assert v.verify(logits, Draft([3, 1, 4]), greedy) == VerifyResult([3, 1, 4, 0], 3)
    assert v.verify(logits, Draft([3, 2, 4]), greedy) == VerifyResult([3, 1], 1)
    assert v.verify(logits, Draft([0, 1, 4]), greedy) == VerifyResult([3], 0)
    assert v.verify(logits[:1], Draft([]), greedy) == VerifyResult([3], 0)


def test_seeded_verification_is_reproducible():
    sp = SamplingParams(temperature=1.0)
    logits = TARGET_LOGITS[[0, 1, 2]]
    draft = Draft([1, 2])  # a point mass: accepted with probability p(d)
    runs = [
        Verifier().verify(logits, draft, sp, torch.Generator().manual_seed(7)) for _ in range(2)
    ]
    assert runs[0] == runs[1]
