"""The KV layout the docs state is the one the cache allocates (dimension by dimension)."""

import re
from pathlib import Path

import torch

import sagellm.engines.native.kv_cache as kv_cache
from sagellm.engines.native.kv_cache import PagedKVCache

ROOT = Path(__file__).resolve().parents[4]
# distinct sizes, so a swapped pair of dimensions cannot pass
SIZES = {"layer": 2, "K|V": 2, "block": 3, "kv_head": 7, "slot": 5, "head_dim": 11}


def documented_dims(text: str, where: str) -> list[str]:
    m = re.search(r"kv\[([^\]]+)\]", text)
    assert m, f"{where} states no kv[...] layout"
    dims = [d.strip() for d in m.group(1).split(",")]
    return ["K|V" if d.startswith("0 (K)") else d.replace("slot_in_block", "slot") for d in dims]


def test_documented_layout_matches_the_tensor():
    cache = PagedKVCache(
        num_layers=2,
        num_blocks=3,
        block_size_tokens=5,
        num_kv_heads=7,
        head_dim=11,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    for text, where in (
        ((ROOT / "README.md").read_text(), "README.md"),
        (kv_cache.__doc__, "kv_cache docstring"),
    ):
        dims = documented_dims(text, where)
        assert tuple(SIZES[d] for d in dims) == tuple(cache.kv.shape), (where, dims)
    k, v = cache.layer(1)
    assert k.shape == v.shape == (3, 7, 5, 11)  # [block, kv_head, slot, head_dim]
