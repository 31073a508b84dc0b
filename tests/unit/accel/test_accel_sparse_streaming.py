"""StreamingPattern: the token-exact sinks + window mask and which blocks are dead."""

import pytest
import torch

from sagellm.accel.sparse import StreamingPattern


def test_key_mask_is_sinks_plus_window_and_causal():
    p = StreamingPattern(sink_tokens=2, window_tokens=3)
    keys = torch.arange(10)
    attended = keys[p.key_mask(keys, torch.tensor(7))].tolist()
    assert attended == [0, 1, 5, 6, 7]  # sinks 0,1; window (7-3, 7]
    assert keys[p.key_mask(keys, torch.tensor(2))].tolist() == [0, 1, 2]
    # broadcasting [queries, keys]
    m = p.key_mask(keys[None, :], torch.tensor([[3], [9]]))
    assert m.sum(1).tolist() == [4, 5]


def test_dead_blocks_are_past_sinks_and_below_every_future_window():
    p = StreamingPattern(sink_tokens=4, window_tokens=8)
    bs = 4
    # computed 20: future queries q >= 20 read keys > q - 8 >= 12: blocks 1 and 2 (keys 4..11)
    assert list(p.dead_blocks(20, bs)) == [1, 2]
    assert list(p.dead_blocks(14, bs)) == []  # query 14 still reads key 7 (> 14 - 8)
    assert list(p.dead_blocks(15, bs)) == [1]  # from query 15 on, keys <= 7 are out
    # check the rule against the mask itself for many lengths
    for c in range(1, 60):
        dead = set(p.dead_blocks(c, bs))
        for j in range(-(-c // bs)):
            keys = torch.arange(j * bs, (j + 1) * bs)
            read = any(p.key_mask(keys, torch.tensor(q)).any() for q in range(c, c + 12))
            assert (j in dead) == (not read), (c, j)


def test_sinks_not_block_aligned_keep_their_block():
    p = StreamingPattern(sink_tokens=5, window_tokens=6)
    assert list(p.dead_blocks(40, 4)) == list(range(2, 8))  # block 1 holds sink key 4
    assert p.max_live_blocks(4) == 2 + 2 + 1


@pytest.mark.parametrize("sinks,window", [(4, 4), (8, 2), (-1, 4)])
def test_bad_window_names_fields(sinks, window):
    with pytest.raises(ValueError, match="sink_tokens|window_tokens"):
        StreamingPattern(sinks, window)
