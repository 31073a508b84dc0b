"""A deliberately weak hash makes every block collide; verification keeps KV correct."""

from sagellm.prefix_reuse import PrefixMatcher, PrefixReuseIndex


def weak_hash(parent, token_ids, salt):
    return sum(token_ids) % 2  # two buckets for everything


def test_collisions_never_reuse_wrong_blocks():
    ix = PrefixReuseIndex(2, hash_fn=weak_hash)
    ix.insert([1, 3, 5, 7], [10, 11])  # block hashes 0, 0
    ix.insert([2, 2, 4, 4], [20, 21])  # same hashes, different tokens
    assert ix.lookup([2, 2, 4, 4, 0]).block_ids == (20, 21)
    assert ix.lookup([1, 3, 5, 7, 0]).block_ids == (10, 11)
    miss = ix.lookup([0, 4, 6, 6, 0])  # hash-equal to both, tokens to neither
    assert miss.hit.matched_length == 0
    assert ix.metrics.snapshot().num_collisions >= 2
    ix.check_invariants()


def test_matcher_compares_tokens_and_salt():
    m = PrefixMatcher()
    assert m.verify([1, 2], (1, 2))
    assert not m.verify([1, 2], [2, 1])
    assert not m.verify([1, 2], [1, 2], "a", "b")
