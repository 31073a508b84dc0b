"""BlockManager tables and defragmentation rewrites."""

import torch

from sagellm.kv_runtime import BlockManager, KVPool, defragment, plan_compaction


def test_tables_are_live_and_rewritten_in_place():
    bm = BlockManager()
    t = bm.table("a")
    bm.append("a", [5, 6])
    assert t == [5, 6]
    assert bm.rewrite({6: 1}) == 1
    assert t == [5, 1]
    assert bm.drop("a") == [5, 1] and t == [] and len(bm) == 0


def test_defragment_compacts_moves_data_and_rewrites_tables():
    p = KVPool(torch.zeros(1, 2, 8, 1, 2, 2), block_dim=2)
    ids = p.allocate(8).block_ids
    for b in ids:
        p.tensor[:, :, b] = float(b)
    p.free([0, 2, 3, 5])  # occupied: 1, 4, 6, 7
    bm = BlockManager()
    bm.append("s", [7, 1, 6, 4])
    assert plan_compaction(p) == {4: 0, 6: 2, 7: 3}
    res = defragment(p, [bm.rewrite])
    assert res.mapping == {4: 0, 6: 2, 7: 3} and res.num_moved_blocks == 3
    assert res.fragmentation_before > 0 and res.fragmentation_after == 0.0
    assert bm.table("s") == [3, 1, 2, 0]
    assert [float(p.tensor[0, 0, b, 0, 0, 0]) for b in bm.table("s")] == [7.0, 1.0, 6.0, 4.0]
    assert p.allocate(4).block_ids == (4, 5, 6, 7)
