"""N-gram lookup, the stats counters and the model drafter's incremental KV bookkeeping."""

from __future__ import annotations

import pytest
import torch

from sagellm.accel.speculative import (
    ModelDrafter,
    NgramDrafter,
    SpecDecodeStats,
    ngram_lookup,
)
from sagellm.accel.speculative.types import DraftRequest


def test_ngram_prefers_the_longest_suffix_and_the_latest_occurrence():
    ctx = [1, 2, 3, 9, 2, 3, 7, 8, 5, 2, 3]
    # suffix [2, 3] occurs at 1 and 4; the latest (4) is followed by 7, 8, 5
    assert ngram_lookup(ctx, 3, 1, 2) == [7, 8, 5]
    # a 3-gram [5, 2, 3] never occurred before: falls back to the 2-gram
    assert ngram_lookup(ctx, 2, 1, 3) == [7, 8]
    # continuation shorter than asked near the end of the context
    assert ngram_lookup([4, 5, 4], 3, 1, 1) == [5, 4]
    assert ngram_lookup([1, 2, 3], 3, 1, 2) == []  # no earlier occurrence
    assert ngram_lookup([1, 2, 1, 2], 3, 2, 2) == [1, 2]


def test_ngram_drafter_validates_its_sizes():
    with pytest.raises(ValueError, match="min_ngram_tokens"):
        NgramDrafter(3, 2)
    d = NgramDrafter(1, 2).generate_draft([DraftRequest("a", [5, 6, 5], 2)])[0]
    assert d.token_ids == [6, 5] and d.probs is None


def test_stats_count_per_position():
    st = SpecDecodeStats()
    st.record(3, 2)
    st.record(2, 0)
    st.record(0, 0)  # an empty draft is not a verification
    assert st.num_verifications == 2
    assert st.acceptance_per_position() == [0.5, 0.5, 0.0]
    d = st.as_dict()
    assert d["spec_acceptance_rate"] == pytest.approx(2 / 5)
    assert d["spec_mean_accepted_length"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        st.record(1, 2)


class CountingLM:
    """Next token = last token + 1 (mod 10); records what it was fed."""

    vocab_size = 10

    def __init__(self) -> None:
        self.held: dict[str, list[int]] = {}
        self.fed: list[tuple[str, list[int]]] = []
        self.capacity = 100

    def num_cached_tokens(self, key):
        return len(self.held.get(key, []))

    def extend(self, batch, all_positions=False):
        out = []
        for key, toks in batch:
            if self.num_cached_tokens(key) + len(toks) > self.capacity:
                out.append(None)
                continue
            self.fed.append((key, list(toks)))
            self.held.setdefault(key, []).extend(toks)
            rows = torch.nn.functional.one_hot((torch.tensor(list(toks)) + 1) % 10, 10).float()
            out.append(rows if all_positions else rows[-1:])
        return out

    def truncate(self, key, n):
        del self.held[key][n:]

    def release(self, key):
        self.held.pop(key, None)


def test_model_drafter_feeds_only_new_tokens_and_rolls_back_rejected_ones():
    lm = CountingLM()
    dr = ModelDrafter(lm)
    assert dr.generate_draft([DraftRequest("a", [1, 2, 3], 3)])[0].token_ids == [4, 5, 6]
    assert lm.held["a"] == [1, 2, 3, 4, 5]  # the last draft's KV is never needed
    # the target accepted 4, rejected 5 and appended 9: KV of [1, 2, 3, 4] is kept
    lm.fed.clear()
    assert dr.generate_draft([DraftRequest("a", [1, 2, 3, 4, 9], 2)])[0].token_ids == [0, 1]
    assert lm.fed == [("a", [9]), ("a", [0])]
    dr.release("a")
    assert "a" not in lm.held


def test_model_drafter_gives_an_empty_draft_when_its_kv_is_full():
    lm = CountingLM()
    lm.capacity = 4
    dr = ModelDrafter(lm)
    drafts = dr.generate_draft([DraftRequest("a", [1, 2, 3], 3), DraftRequest("b", [1] * 9, 2)])
    assert drafts[0].token_ids == [4, 5]  # stopped when the 5th token would not fit
    assert drafts[1].token_ids == []
