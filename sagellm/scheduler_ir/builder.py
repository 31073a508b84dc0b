"""IRBuilder: turns a strategy's :class:`StepDecision` into an unfused :class:`IRGraph`.

Per decision item ``(r, n)`` of a request starting at token ``c`` (``RequestView.start_tokens``:
its computed KV when running, its prefix-cache hit when waiting)::

    cache:r@c --[kv_load]--> kv:r@c           (waiting request with a cache hit, c > 0)
    tokens:r@c, kv:r@c --[prefill|decode|verify]--> hidden:r@c, kvnew:r@c
    kvnew:r@c --[kv_store]--> kv:r@(c+n)      (index the blocks the forward completed)
    hidden:r@c, kv:r@(c+n) --[sample]--> token:r   (when the chunk ends at the last token;
                                              after the store, which may be the last use)

``kv_load`` is admission's cache half: share the hit's device blocks and load its host/disk
blocks back (config ``num_tokens`` = c, ``lower_tier_tokens``). With ``overlap_tier_loads`` a
waiting request whose hit has host/disk blocks gets only its ``kv_load`` this step (config
``overlap``: the engine reads the tiers while this step's forward runs; the request computes
from the next step on). With ``tp_size > 1`` every forward also outputs two partial sums per
layer, each reduced by an ``all_reduce`` node (``bytes`` = tokens x hidden bytes; ``layer``,
``part`` = attn | mlp). The native engine issues these collectives inside the forward, at their
layer (``engines/native/tp_plan.py``). A request
listed twice gets two chained chunks (the second reads the first's KV).
"""

from __future__ import annotations

from sagellm.core.types import RequestId
from sagellm.scheduler_ir.graph import IRGraph
from sagellm.scheduler_ir.types import IRNode, SchedulerState, StepDecision, node_config


class IRBuilder:
    """Builds the per-request nodes of one step; the optimizer fuses them afterwards.

    ``prefill_chunk_tokens`` splits each prefill item into chunks of at most that many tokens
    (the optimizer merges them back under the token budget); None keeps items whole.
    ``num_draft_tokens`` maps a decoding request to how many speculative tokens it verifies
    (its item becomes a ``verify`` node of ``1 + drafts`` tokens).
    """

    def __init__(
        self,
        prefill_chunk_tokens: int | None = None,
        device: str = "cpu",
        overlap_tier_loads: bool = False,
    ) -> None:
        if prefill_chunk_tokens is not None and prefill_chunk_tokens < 1:
            raise ValueError(
                f"prefill_chunk_tokens must be None or >= 1, got {prefill_chunk_tokens!r}"
            )
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.device = device
        self.overlap_tier_loads = overlap_tier_loads

    def build(
        self,
        decision: StepDecision,
        state: SchedulerState,
        num_draft_tokens: dict[RequestId, int] | None = None,
    ) -> IRGraph:
        """The graph of ``decision`` against ``state``; raises ValueError for an unknown
        request or more tokens than it has pending."""
        views = state.by_id()
        cursor: dict[RequestId, int] = {}
        nodes: list[IRNode] = []
        drafts = num_draft_tokens or {}
        for rid in decision.preempt:
            if rid not in views:
                raise ValueError(f"preempt names unknown request {rid!r}")
        for rid, n in decision.items:
            v = views.get(rid)
            if v is None:
                raise ValueError(f"decision names unknown request {rid!r}")
            c = 0 if rid in decision.preempt else v.start_tokens
            first = rid not in cursor
            c = cursor.get(rid, c)
            if n < 1 or c + n > v.num_tokens:
                raise ValueError(
                    f"request {rid!r}: num_tokens {n} not in [1, {v.num_tokens - c}] "
                    f"(pending tokens)"
                )
            if first and not v.running and c > 0 and rid not in decision.preempt:
                overlap = self.overlap_tier_loads and v.num_lower_tier_hit_tokens > 0
                nodes.append(self._kv_load(v, c, overlap))
                if overlap:
                    cursor[rid] = v.num_tokens  # nothing more for it this step
                    continue
            elif not first and cursor[rid] == v.num_tokens:
                continue
            for start, size in self._chunks(c, n, v.num_prompt_tokens):
                nodes.extend(self._request_nodes(v, start, size, drafts.get(rid, 0), state))
            cursor[rid] = c + n
        return IRGraph(tuple(nodes), tuple(decision.preempt))

    def _chunks(self, c: int, n: int, num_prompt: int) -> list[tuple[int, int]]:
        k = self.prefill_chunk_tokens
        if k is None or n <= k or c >= num_prompt:
            return [(c, n)]
        return [(s, min(k, c + n - s)) for s in range(c, c + n, k)]

    def _kv_load(self, v, c: int, overlap: bool) -> IRNode:
        tag = f"{v.request_id}@{c}"
        return IRNode(
            f"kv_load/{tag}",
            "kv_load",
            (f"cache:{tag}",),
            (f"kv:{tag}",),
            node_config(
                request_id=v.request_id,
                num_tokens=c,
                lower_tier_tokens=v.num_lower_tier_hit_tokens,
                overlap=overlap,
            ),
            self.device,
        )

    def _request_nodes(self, v, c: int, n: int, drafts: int, state: SchedulerState) -> list[IRNode]:
        rid, dev = v.request_id, self.device
        tag = f"{rid}@{c}"
        out: list[IRNode] = []
        fwd_in = [f"tokens:{tag}"] + ([f"kv:{tag}"] if c > 0 else [])
        decoding = c >= v.num_prompt_tokens and n == 1
        kind = "verify" if decoding and drafts else ("decode" if decoding else "prefill")
        fwd_out = [f"hidden:{tag}", f"kvnew:{tag}"]
        ars: list[IRNode] = []
        if state.tp_size > 1:
            nbytes = n * state.hidden_bytes_per_token
            for layer in range(state.num_layers):
                for part in ("attn", "mlp"):
                    p = f"{tag}:L{layer}.{part}"
                    fwd_out.append(f"partial:{p}")
                    ars.append(
                        IRNode(
                            f"all_reduce/{p}",
                            "all_reduce",
                            (f"partial:{p}",),
                            (f"reduced:{p}",),
                            node_config(request_id=rid, bytes=nbytes, layer=layer, part=part),
                            dev,
                        )
                    )
        out.append(
            IRNode(
                f"{kind}/{tag}",
                kind,
                tuple(fwd_in),
                tuple(fwd_out),
                node_config(
                    request_id=rid,
                    start_tokens=c,
                    num_tokens=n + (drafts if kind == "verify" else 0),
                ),
                dev,
            )
        )
        out.extend(ars)
        out.append(
            IRNode(
                f"kv_store/{tag}",
                "kv_store",
                (f"kvnew:{tag}",),
                (f"kv:{rid}@{c + n}",),
                node_config(request_id=rid, num_tokens=n),
                dev,
            )
        )
        if c + n == v.num_tokens:
            # after the store: a request that finishes here frees its KV once indexed
            sample_in = [f"hidden:{tag}", f"kv:{rid}@{c + n}"]
            sample_in += [ars[-1].outputs[0]] if ars else []
            out.append(
                IRNode(
                    f"sample/{rid}",
                    "sample",
                    tuple(sample_in),
                    (f"token:{rid}",),
                    node_config(request_id=rid),
                    dev,
                )
            )
        return out
