"""Quest: block summaries, the upper bound, and which blocks a decode query selects."""

import torch

from sagellm.accel.sparse import QuestDecode, QuestSummaries, upper_bounds

BS = 4  # tokens per block


def _cache(num_blocks: int, kvh: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, num_blocks, kvh, BS, d, generator=g) * 0.1  # [layers, blocks, ...]


def _decode(summ, table, num_computed, top_k):
    complete = [c // BS for c in num_computed]
    return QuestDecode(
        summaries=summ,
        table=torch.tensor(table),
        num_complete_blocks=torch.tensor(complete),
        query_pos=torch.tensor(num_computed),
        top_k_blocks=torch.tensor(top_k),
        max_top_k_blocks=max(top_k),
        block_size_tokens=BS,
    )


def test_summaries_are_min_and_max_of_each_block():
    keys = _cache(5, 2, 3)
    s = QuestSummaries(1, 5, 2, 3, torch.float32, "cpu")
    s.update(keys, [3, 1], chunk_blocks=1)
    torch.testing.assert_close(s.key_min[0, 3], keys[0, 3].amin(dim=1), rtol=0, atol=0)
    torch.testing.assert_close(s.key_max[0, 1], keys[0, 1].amax(dim=1), rtol=0, atol=0)
    assert s.key_min[0, 0].abs().sum() == 0  # never summarised


def test_bound_is_above_every_real_score_of_the_block():
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(1, 6, 2, BS, 8, generator=g)  # kvH 2
    s = QuestSummaries(1, 6, 2, 8, torch.float32, "cpu")
    s.update(keys, list(range(6)))
    q = torch.randn(1, 4, 8, generator=g)  # 4 query heads, groups of 2 per KV head
    ub = upper_bounds(q, s.key_min[0][None], s.key_max[0][None])[0]  # [blocks, kvH]
    for h in range(2):
        qh = q[0, 2 * h : 2 * h + 2]  # [G, D]
        real = torch.einsum("gd,btd->bt", qh, keys[0, :, h]).amax(dim=1)  # best key per block
        assert (ub[:, h] >= real - 1e-5).all()


def test_selects_the_blocks_holding_keys_aligned_with_the_query():
    keys = torch.zeros(1, 8, 1, BS, 2)
    keys[..., 1] = 1.0  # every key points along y
    keys[0, 5, 0, 2] = torch.tensor([9.0, 0.0])  # one key of physical block 5 points along x
    keys[0, 2, 0, 0] = torch.tensor([4.0, 0.0])  # and one of physical block 2, less so
    s = QuestSummaries(1, 8, 1, 2, torch.float32, "cpu")
    s.update(keys, list(range(8)))
    # logical blocks 0..4 of the sequence live in physical blocks 7, 5, 0, 2, 6; query at 17
    dec = _decode(s, [[7, 5, 0, 2, 6]], [17], [2])
    q = torch.tensor([[[1.0, 0.0]]])  # [B, H, D], along x
    idx, valid = dec.select(0, q)
    assert idx[0, :, 0].tolist() == [1, 3, 4]  # top-2 complete blocks in order, then current
    assert valid.all()
    k, _, mask = dec.gather(0, q, keys[0], keys[0])
    assert k.shape == (1, 3, 1, BS, 2)
    torch.testing.assert_close(k[0, 0], keys[0, 5])  # physical block of logical block 1
    # current block 4 (keys 16..19): only key 16 <= query 17 ... and 17 itself
    assert mask.view(3, BS)[2].tolist() == [True, True, False, False]
    assert mask.view(3, BS)[:2].all()


def test_short_sequence_and_prompt_chunk_attend_all_their_blocks():
    keys = _cache(10, 1, 4)
    s = QuestSummaries(1, 10, 1, 4, torch.float32, "cpu")
    s.update(keys, list(range(10)))
    # seq 0: 2 complete blocks (<= k = 3): all; seq 1: a prompt chunk with a budget of all 6
    dec = _decode(s, [[4, 5, 6, 0, 0, 0, 0], [0, 1, 2, 3, 7, 8, 9]], [9, 25], [3, 6])
    idx, valid = dec.select(0, torch.randn(2, 1, 4))
    assert idx[0][valid[0]].tolist() == [0, 1, 2]
    assert idx[1][valid[1]].tolist() == [0, 1, 2, 3, 4, 5, 6]
