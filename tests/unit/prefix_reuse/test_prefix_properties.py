"""Hypothesis: the radix tree stays consistent and lookups agree with a brute-force model."""

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm.prefix_reuse import PrefixReuseIndex

BS = 2
seqs = st.lists(st.integers(0, 3), min_size=0, max_size=10)


def brute_force_match(stored: list[list[int]], query: list[int]) -> int:
    """Longest full-block prefix of ``query`` (capped at len-1) shared with any stored seq."""
    cap = max(0, (len(query) - 1) // BS) * BS
    best = 0
    for s in stored:
        full = len(s) // BS * BS
        n = 0
        while n + BS <= min(cap, full) and s[n : n + BS] == query[n : n + BS]:
            n += BS
        best = max(best, n)
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "lookup", "evict"]), seqs), max_size=25))
def test_radix_consistency_against_model(ops):
    ix = PrefixReuseIndex(BS, hash_fn=lambda p, t, s: sum(t) % 3)  # collisions on purpose
    stored: list[list[int]] = []
    for op, toks in ops:
        if op == "insert":
            ix.insert(toks, list(range(len(toks) // BS)))
            stored.append(toks)
        elif op == "lookup":
            assert ix.lookup(toks).hit.matched_length == brute_force_match(stored, toks)
        else:
            ix.evict_lru(len(ix))
            stored.clear()
        ix.check_invariants()


def test_concurrent_insert_and_lookup():
    ix = PrefixReuseIndex(4)
    errors: list[BaseException] = []

    def worker(tid: int) -> None:
        try:
            for i in range(200):
                toks = [tid, i % 7, 1, 2] + [i % 5] * 8
                ix.insert(toks, [tid * 1000 + i, tid * 1000 + i + 1, tid * 1000 + i + 2])
                res = ix.lookup([*toks, 0])
                assert res.hit.matched_length == 12
                assert res.entries[0].token_length == 4
        except BaseException as err:  # surfaced in the main thread below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ix.check_invariants()
    assert ix.metrics.snapshot().num_lookups == 800
