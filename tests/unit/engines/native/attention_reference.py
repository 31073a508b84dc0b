"""The fp64 dense reference the attention tests compare against: each query of a sequence
attends its own table's keys 0 .. num_computed + i under a plain causal softmax."""

import torch

from sagellm.engines.native.kernels import paged_attention_op


def scattered_tables(q_lens, num_computed, block_size, num_blocks, generator):
    """Block tables over a random permutation of ``num_blocks`` blocks (drawn from
    ``generator``), each sequence's enough for its tokens, and each sequence's first flat row.
    Returns ``(tables, starts, total query rows)``."""
    perm = torch.randperm(num_blocks, generator=generator).tolist()
    tables, starts, t = [], [], 0
    for ql, nc in zip(q_lens, num_computed, strict=True):
        tables.append([perm.pop() for _ in range(-(-(nc + ql) // block_size))])
        starts.append(t)
        t += ql
    return tables, starts, t


def dense_reference(q, kc, vc, tables, starts, q_lens, num_computed, scale):
    """q [T, H, D]; caches [N, kvH, bs, D]; per sequence its block table, first flat row,
    query count and tokens before its first query. Returns [T, H, D] fp64."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    kvh, d = kc.shape[1], q.shape[-1]
    grp = q.shape[1] // kvh
    for bt, s0, ql, nc in zip(tables, starts, q_lens, num_computed, strict=True):
        k = kc[bt].double().permute(1, 0, 2, 3).reshape(kvh, -1, d)
        v = vc[bt].double().permute(1, 0, 2, 3).reshape(kvh, -1, d)
        for i in range(ql):
            n = nc + i + 1
            for h in range(q.shape[1]):
                s = (k[h // grp, :n] @ q[s0 + i, h].double()) * scale
                out[s0 + i, h] = s.softmax(-1) @ v[h // grp, :n]
    return out


def run_kernel(q, kc, vc, group, scale, out):
    """``torch.ops.sagellm.paged_attention`` of q over the caches for one attention group
    (``build_group``), written into ``out``; returns ``out``."""
    paged_attention_op()(
        q, kc, vc, group.block_ids, group.q_starts, group.q_lens, group.num_computed,
        group.max_blocks, scale, out,
    )  # fmt: skip
    return out
