"""Lookups that take the prompt's hash chain (kept on the sequence) match exactly what a
lookup that hashes the prompt matches, and the entries they return follow every move."""

import pytest

from sagellm.prefix_reuse import PrefixReuseIndex


def weak_hash(parent, tokens, salt):
    return 7  # every block collides: only the token compare tells them apart


def test_chain_lookup_equals_hashing_lookup_and_a_collision_still_misses():
    for hash_fn in (None, weak_hash):
        ix = PrefixReuseIndex(2, **({"hash_fn": hash_fn} if hash_fn else {}))
        ix.insert([1, 2, 3, 4, 5, 6], [10, 11, 12], salt="a")
        ix.insert([1, 2, 9, 9], [20, 21], salt="a")
        for q, salt in (([1, 2, 3, 4, 5, 6, 0], "a"), ([1, 2, 9, 9, 0], "a"), ([1, 2, 3], "b")):
            chain = ix.block_hashes(q, salt, (len(q) - 1) // 2)
            want = ix.lookup(q, salt, touch=False)
            assert ix.lookup(q, salt, hashes=chain, touch=False) == want
        assert ix.lookup([1, 2, 9, 9, 0], "a").block_ids == (10, 21)
        assert ix.lookup([1, 2, 3], "b").hit.matched_length == 0


def test_returned_entries_follow_relocation_and_remap():
    ix = PrefixReuseIndex(2)
    first = ix.insert([1, 2, 3, 4], [5, 6])
    assert ix.lookup([1, 2, 3, 4, 0]).block_ids == (5, 6)
    ix.relocate(first[1].entry_id, (0,), "host")
    e = ix.lookup([1, 2, 3, 4, 0]).entries[1]
    assert (e.kv_block_ids, e.tier) == ((0,), "host")
    assert ix.remap_blocks({5: 8}) == 1
    assert ix.lookup([1, 2, 3, 4, 0]).block_ids == (8, 0)
    assert ix.get(first[0].entry_id).kv_block_ids == (8,)


def test_trusted_chain_checks_the_last_block_and_falls_back_to_every_block():
    ix = PrefixReuseIndex(2)
    assert ix.trust_hash_chain  # the built-in BLAKE2b chain is trusted by default
    ix.insert([1, 2, 3, 4, 5, 6], [10, 11, 12])
    q = [1, 2, 3, 4, 5, 6, 0]
    good = ix.block_hashes(q, None, 3)
    assert ix.lookup(q, hashes=good, touch=False).block_ids == (10, 11, 12)
    # a chain that is not the prompt's (stale): the last block's tokens differ, so every
    # block is compared and the match stops at the first differing one
    other = [1, 2, 9, 9, 8, 8, 0]
    res = ix.lookup(other, hashes=good, touch=False)
    assert res.block_ids == (10,) and res.hit.confidence == 1.0
    assert ix.lookup([7, 7, 7], hashes=good, touch=False).hit.matched_length == 0


def test_untrusted_default_hash_verifies_every_block():
    ix = PrefixReuseIndex(2, trust_hash_chain=False)
    ix.insert([1, 2, 3, 4, 5, 6], [10, 11, 12])
    good = ix.block_hashes([1, 2, 3, 4, 5, 6], None, 3)
    # the last block matches but a middle one does not: only full verification sees it
    assert ix.lookup([1, 2, 9, 9, 5, 6, 0], hashes=good, touch=False).block_ids == (10,)
    assert not PrefixReuseIndex(2, hash_fn=weak_hash).trust_hash_chain


def test_insert_below_an_entry_of_another_salt_is_refused():
    ix = PrefixReuseIndex(2)
    first = ix.insert([1, 2], [10], salt="a")
    with pytest.raises(ValueError, match="another salt"):
        ix.insert([1, 2, 3, 4], [10, 11], salt="b", parent_entry_id=first[0].entry_id)
