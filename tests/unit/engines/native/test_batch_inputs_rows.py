"""The K/V destination rows and lazily built attention index tensors of a batch."""

import torch

from sagellm.engines.native.attention import build_group
from sagellm.engines.native.batch_inputs import (
    LIST_KV_ROWS_MAX_TOKENS,
    kv_rows_from_lists,
    kv_rows_of,
)


def test_kv_rows_from_lists_equals_the_tensor_form_on_both_paths():
    gen = torch.Generator().manual_seed(0)
    for num_tokens in (1, 3, LIST_KV_ROWS_MAX_TOKENS, LIST_KV_ROWS_MAX_TOKENS + 5):
        pos = torch.randint(0, 4000, (num_tokens,), generator=gen).tolist()
        blocks = torch.randint(0, 500, (num_tokens,), generator=gen).tolist()
        for kv_heads, block_size in ((1, 16), (3, 32)):
            got = kv_rows_from_lists(pos, blocks, kv_heads, block_size, torch.device("cpu"))
            want = kv_rows_of(torch.tensor(pos), torch.tensor(blocks), kv_heads, block_size)
            assert got.dtype == torch.int64
            assert torch.equal(got, want), (num_tokens, kv_heads, block_size)


def test_group_index_tensors_built_on_first_use():
    # two sequences: 3 queries at rows 0..2 after 5 cached tokens, 1 query at row 3 after 40
    g = build_group([0, 3], [3, 1], [5, 40], [[7, 2], [4, 9]], 32, torch.device("cpu"))
    assert "mask" not in vars(g) and "token_index" not in vars(g)
    assert g.token_index.tolist() == [[0, 1, 2], [3, 0, 0]]
    assert g.valid.tolist() == [[True, True, True], [True, False, False]]
    assert g.flat_index.tolist() == [0, 1, 2, 3]
    assert g.key_limits.tolist() == [[6, 7, 8], [41, 1, 1]]
    keys = torch.arange(64)
    assert torch.equal(g.mask[0, 0, 1], keys <= 6)
    assert torch.equal(g.mask[1, 0, 0], keys <= 40)
    assert torch.equal(g.mask[1, 0, 2], keys <= 0)  # padding sees key 0 only
    assert g.mask is g.mask  # cached
