"""Teacher-forced logits of a token sequence (perplexity, verification of drafted text).

``teacher_forced_logits`` runs the engine's model over ``token_ids`` in one forward with causal
attention over a scratch paged KV cache of the engine's own layout, so it never touches the
engine's pool, queues or prefix index and can run between steps of a serving engine. Row ``i``
of the result is the fp32 logit vector predicting token ``i + 1`` from tokens ``0..i``.
"""

from __future__ import annotations

import torch

from sagellm.engines.native.attention import AttnMetadata, build_group
from sagellm.engines.native.kv_cache import PagedKVCache
from sagellm.engines.native.tp_group import TPUnsupportedError


def teacher_forced_logits(engine, token_ids: list[int]) -> torch.Tensor:
    """fp32 logits [len(token_ids), vocab] of ``engine``'s model, teacher-forced."""
    if engine.tp is not None:
        raise TPUnsupportedError(
            "teacher_forced_logits runs a scratch forward on rank 0 alone; with tp_size > 1 "
            "use prompt_logits (the serving path)"
        )
    if not token_ids:
        raise ValueError("token_ids is empty")
    n = len(token_ids)
    if n > engine.max_model_len:
        raise ValueError(f"{n} tokens exceed the model length ({engine.max_model_len})")
    arch, dev, bs = engine.arch, engine.device, engine.config.block_size_tokens
    num_blocks = -(-n // bs)
    cache = PagedKVCache(
        arch.num_layers, num_blocks, bs, arch.num_kv_heads, arch.head_dim, engine.kv_dtype, dev
    )
    positions = torch.arange(n, dtype=torch.int64, device=dev)
    heads = torch.arange(arch.num_kv_heads, dtype=torch.int64, device=dev)
    # block b of this sequence is cache block b: row of (token t, head h) in cache.view(-1, D)
    kv_rows = ((positions // bs)[:, None] * arch.num_kv_heads + heads) * bs + (positions % bs)[
        :, None
    ]
    group = build_group([0], [n], [0], [list(range(num_blocks))], bs, dev)
    meta = AttnMetadata(kv_rows=kv_rows.flatten(), groups=(group,))
    ids = torch.tensor(token_ids, dtype=torch.int64, device=dev)
    return engine.model.forward(ids, positions, meta, cache, positions)
